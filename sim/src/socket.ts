// The VM's one TCP/TLS socket, shaped like a meter's network stack instead of Node's.
//
// The CLI's stock host socket hands the VM each chunk Node read (up to 64 KB) at once and never
// refuses a write. A meter does neither, and its firmware must cope with what it does:
//   - reads of at most 1 KB (devicescript-esp32 main/sock.c reads into `sockbuf[1024]`), and at
//     most a TCP receive window per pass of the VM's main loop (lwIP's window: ESP-IDF's default
//     TCP_WND is 5760 B; the sender waits for the meter to read);
//   - a send queue of 50 writes (main/sock.c `xQueueCreate(50, ...)`): a write into a full queue
//     returns -1, which @devicescript/net's Socket.send() throws as "send error -1".
// A stock-socket VM receiving a flood allocates one buffer per Node chunk on its 64 KB heap and
// dies of OutOfMemory (panic 60004) before its firmware sees a byte, which no board would do.
import { connect as tcpConnect, type Socket } from "node:net"
import { connect as tlsConnect } from "node:tls"

/** Bytes per read event, as the ESP32 runtime reads. */
export const READ_BYTES = 1024
/** Bytes delivered per pass of the VM's main loop (ESP-IDF's default lwIP TCP_WND). */
export const RX_WINDOW = 5760
/** Writes queued before the socket refuses one (ESP32 runtime). */
export const TX_QUEUE = 50

// runtime/devicescript/network/jd_network.h
const EV_OPEN = 1
const EV_CLOSE = 2
const EV_ERROR = 3
const EV_MESSAGE = 4

/** The emscripten module members this socket uses (names from the CLI's bundled VM). */
interface VmModule {
  HEAPU8: Uint8Array
  _malloc(n: number): number
  _free(p: number): void
  _jd_em_tcpsock_on_event(ev: number, ptr: number, len: number): void
  _jd_em_process(): number
  sockOpen(hostPtr: number, port: number): number
  sockWrite(ptr: number, len: number): number
  sockClose(): number
}

/**
 * Replaces the VM's host socket with the meter-shaped one. `wake(ms)` asks the host for a pass of
 * the VM's main loop (sim/src/vm.ts): at once after an event, 10 ms on while data waits beyond the
 * window (the pace of the CLI's fixed 10 ms loop, which this window was measured against).
 */
export function installMeterSocket(vm: unknown, wake: (ms: number) => void) {
  const m = vm as VmModule
  let sock: Socket | undefined
  let rx: Buffer[] = []
  let rxBytes = 0
  let budget = RX_WINDOW
  let queued = 0

  const event = (ev: number, data?: Uint8Array) => {
    const len = data?.length ?? 0
    const ptr = len ? m._malloc(len) : 0
    if (ptr) m.HEAPU8.set(data!, ptr)
    m._jd_em_tcpsock_on_event(ev, ptr, len)
    if (ptr) m._free(ptr)
    wake(0)
  }
  /** Hands the VM what its window allows now, 1 KB at a time; pauses the sender beyond that. */
  const deliver = () => {
    while (rx.length && budget > 0) {
      const head = rx[0]
      const n = Math.min(head.length, READ_BYTES, budget)
      const piece = head.subarray(0, n)
      if (n === head.length) rx.shift()
      else rx[0] = head.subarray(n)
      rxBytes -= n
      budget -= n
      event(EV_MESSAGE, piece)
      if (!sock) return // the VM closed it
    }
    if (rxBytes > RX_WINDOW) sock?.pause()
    else sock?.resume()
    if (rx.length) wake(10)
  }

  const process = m._jd_em_process.bind(m)
  m._jd_em_process = () => {
    budget = RX_WINDOW
    if (rx.length) deliver()
    return process()
  }

  m.sockOpen = (hostPtr, port) => {
    let end = hostPtr
    while (m.HEAPU8[end] !== 0 && end - hostPtr < 256) end++
    const host = Buffer.from(m.HEAPU8.subarray(hostPtr, end)).toString("utf8")
    const tls = port < 0
    const p = Math.abs(port)
    const name = `${tls ? "tls" : "tcp"}://${host}:${p}`
    sock?.destroy()
    rx = []
    rxBytes = 0
    queued = 0
    const s = tls ? tlsConnect({ host, port: p }) : tcpConnect({ host, port: p })
    sock = s
    s.once(tls ? "secureConnect" : "connect", () => {
      if (s === sock) event(EV_OPEN)
    })
    s.on("data", (b: Buffer) => {
      if (s !== sock) return
      rx.push(b)
      rxBytes += b.length
      deliver()
    })
    s.on("error", (e) => {
      if (s !== sock) return
      sock = undefined
      event(EV_ERROR, Buffer.from(`${name}: ${e.message}`))
    })
    s.on("close", () => {
      if (s !== sock) return
      sock = undefined
      event(EV_CLOSE)
    })
    return 0
  }

  m.sockWrite = (ptr, len) => {
    if (!sock) return -10
    if (queued >= TX_QUEUE) return -1
    queued++
    const s = sock
    s.write(m.HEAPU8.slice(ptr, ptr + len), () => {
      if (s === sock) queued--
    })
    return 0
  }

  m.sockClose = () => {
    if (!sock) return -10
    const s = sock
    sock = undefined
    rx = []
    rxBytes = 0
    s.end()
    return 0
  }
}
