// A private Jacdac bus per simulated meter: the VM on one side, jacdac-ts servers on the other.
import { CMD_GET_REG, JDBus, JDRegisterServer, Packet, Transport, type PackedValues } from "jacdac-ts"
import type { DevsVm } from "./vm.js"

/**
 * Carries Jacdac frames between a VM instance and a jacdac-ts bus in the same process.
 * Frames are copied and delivered on the next turn of the event loop: the VM drops replies
 * that arrive re-entrantly while it is still sending.
 */
class VmTransport extends Transport {
  constructor(private readonly vm: DevsVm) {
    super("citymeter-vm")
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

export function createVmBus(vm: DevsVm): JDBus {
  const bus = new JDBus([new VmTransport(vm)], { disableRoleManager: true })
  return bus
}

/**
 * Delivers a register's value to the VM as a report, at once rather than on the next turn: a pulse
 * input's level change then reaches the VM's register cache before any VM timer due after it runs,
 * also when a busy event loop runs overdue timers back to back (queued, a rise and its fall could
 * both land between two polls that were due inside the pulse). Only from outside the VM's own
 * callbacks (a host timer), where nothing re-enters the VM.
 */
export function reportNow<T extends PackedValues>(vm: DevsVm, reg: JDRegisterServer<T>) {
  const { service } = reg
  if (!service.device || !reg.data || !vm.devsIsRunning()) return
  const pkt = Packet.from(CMD_GET_REG | reg.identifier, reg.data)
  pkt.serviceIndex = service.serviceIndex
  pkt.deviceIdentifier = service.device.deviceId
  vm.handlePacket(pkt.toBuffer())
}
