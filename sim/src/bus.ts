// A private Jacdac bus per simulated meter: the VM on one side, jacdac-ts servers on the other.
import { JDBus, Transport, delay, type JDService } from "jacdac-ts"
import type { DevsVm } from "./vm.js"

/**
 * Carries Jacdac frames between a VM instance and a jacdac-ts bus in the same process.
 * Frames are copied and delivered on the next turn of the event loop: the VM drops replies
 * that arrive re-entrantly while it is still sending.
 */
class VmTransport extends Transport {
  // jacdac-ts prints "<type>: connecting" (console.debug): the type names the meter
  constructor(
    private readonly vm: DevsVm,
    meterId: string,
  ) {
    super(`citymeter-vm ${meterId}`)
    vm.sendPacket = (frame) => {
      const copy = frame.slice()
      setImmediate(() => this.deliver(copy))
    }
  }
  private deliver(frame: Uint8Array) {
    if (this.connected) this.handleFrame(frame)
  }
  protected transportSendPacketAsync(frame: Uint8Array): Promise<void> {
    const copy = frame.slice()
    setImmediate(() => {
      if (this.vm.devsIsRunning()) this.vm.handlePacket(copy)
    })
    return Promise.resolve()
  }
  protected transportConnectAsync(): Promise<void> {
    return Promise.resolve()
  }
  protected transportDisconnectAsync(): Promise<void> {
    return Promise.resolve()
  }
}

export function createVmBus(vm: DevsVm, meterId: string): JDBus {
  const bus = new JDBus([new VmTransport(vm, meterId)], { disableRoleManager: true })
  return bus
}

/** The VM's own service of `serviceClass` on its bus, once it has announced it (within 2 s). */
export async function vmService(bus: JDBus, serviceClass: number, what: string): Promise<JDService> {
  for (let i = 0; i < 200; ++i) {
    const service = bus.services({ serviceClass })[0]
    if (service) return service
    await delay(10)
  }
  throw new Error(`the VM's ${what} service did not appear on the bus`)
}
