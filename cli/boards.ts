// Board ids: DeviceScript's built-in boards (@dsboard/<id> in @devicescript/core) plus this
// repository's boards/<id>.board.json, plus "sim" for the simulator.
import { existsSync, readFileSync, readdirSync } from "node:fs"
import { createRequire } from "node:module"
import { join } from "node:path"
import { PULSE_LIMITS } from "../bridge/src/tunables/pulse-limits.js"
import { paths } from "../sim/src/paths.js"

const require = createRequire(import.meta.url)

export function builtinBoards(): string[] {
  const dts = require.resolve("@devicescript/core/src/devicescript-boards.d.ts")
  return [...readFileSync(dts, "utf8").matchAll(/declare module "@dsboard\/([A-Za-z0-9_]+)"/g)].map((m) => m[1])
}

export function customBoards(): string[] {
  const dir = join(paths.root, "boards")
  if (!existsSync(dir)) return []
  return readdirSync(dir)
    .filter((f) => f.endsWith(".board.json"))
    .map((f) => f.slice(0, -".board.json".length))
}

export function knownBoards(): Set<string> {
  return new Set(["sim", ...builtinBoards(), ...customBoards()])
}

/** A custom board's JSON, or undefined for a built-in one. */
export function customBoard(id: string): Record<string, unknown> | undefined {
  const f = join(paths.root, "boards", `${id}.board.json`)
  return existsSync(f) ? (JSON.parse(readFileSync(f, "utf8")) as Record<string, unknown>) : undefined
}

/** The chip of a board: a custom board's archId, a built-in one's from the DeviceScript CLI. */
export function boardArch(id: string): string | undefined {
  if (id === "sim") return "wasm"
  const custom = customBoard(id)
  if (custom) return custom.archId as string
  const text = readFileSync(require.resolve("@devicescript/cli/built/devicescript-cli.cjs"), "utf8")
  const at = text.indexOf(`${id}: {\n`)
  return at < 0 ? undefined : /archId: "([^"]+)"/.exec(text.slice(at, at + 1500))?.[1]
}

/** How a board is flashed: esp32 (esptool over a serial port), rp2040 (UF2 drive), or sim. */
export function boardFamily(id: string): "esp32" | "rp2040" | "sim" | "unknown" {
  const arch = boardArch(id) ?? ""
  if (id === "sim") return "sim"
  if (arch.startsWith("esp32")) return "esp32"
  if (arch.startsWith("rp2040")) return "rp2040"
  return "unknown"
}

/**
 * Bytes of one bank of the DeviceScript settings store (the only flash a program has; the budget
 * within it: bridge/src/tunables/storage-budget.ts storageBudget): 16384 B on ESP32 (a 256 KB store / 16), 8192 B on
 * the RP2040 and in the simulator (128 KB / 16). A custom board states it as "$settingsBankBytes".
 */
export function settingsBankBytes(id: string): number {
  const stated = customBoard(id)?.$settingsBankBytes
  if (typeof stated === "number") return stated
  return boardFamily(id) === "esp32" ? 16384 : 8192
}

/**
 * Strapping pins (chip datasheets: ESP32-C3 GPIO2, 8, 9; ESP32-S3 GPIO0, 3, 45, 46): no sensor input
 * or bus line may sit on them, or the level it holds at reset picks the boot mode.
 */
export const STRAPPING_PINS: Record<string, number[]> = { esp32c3: [2, 8, 9], esp32s3: [0, 3, 45, 46] }
/** The metering IC's I2C limit (ADE7953 data sheet, "I2C Interface": at most 400 kHz). */
export const I2C_MAX_KHZ = 400
/** The board's sensor inputs by pin name (boards/<id>.board.json "pins"). */
const SENSOR_PINS = ["FLOW_PULSE", "S0_PULSE", "TAMPER", "PRESS_ADC"]

/**
 * What a board's I2C bus (the metering IC's) gets wrong: a missing or strapping pin, a line shared
 * with a sensor input, a clock over the IC's limit, or on the RP2040 a pin pair no I2C block has
 * (the devicescript-pico runtime takes SDA on an even GPIO, SCL on an odd one, both of one block:
 * bit 1 of the GPIO number selects I2C0 or I2C1).
 */
function i2cErrors(id: string, arch: string, pins: Record<string, number>, bus: unknown): string[] {
  if (bus === undefined) return []
  const { pinSDA: sda, pinSCL: scl, kHz } = bus as { pinSDA?: unknown; pinSCL?: unknown; kHz?: unknown }
  if (typeof sda !== "number" || typeof scl !== "number" || sda === scl)
    return [`${id}: i2c needs two different GPIO numbers pinSDA and pinSCL`]
  const errors: string[] = []
  for (const [line, gpio] of [
    ["SDA", sda],
    ["SCL", scl],
  ] as const) {
    if ((STRAPPING_PINS[arch] ?? []).includes(gpio))
      errors.push(
        `${id}: I2C ${line} is on GPIO${gpio}, a strapping pin of the ${arch} (${STRAPPING_PINS[arch].join(", ")})`,
      )
    for (const name of Object.keys(pins))
      if (pins[name] === gpio) errors.push(`${id}: I2C ${line} on GPIO${gpio} is also pin ${name}`)
  }
  if (arch.startsWith("rp2040") && (sda % 2 !== 0 || scl % 2 !== 1 || (sda >> 1) % 2 !== (scl >> 1) % 2))
    errors.push(
      `${id}: RP2040 I2C needs SDA on an even and SCL on an odd GPIO of one block (GP4/GP5 is I2C0), not ${sda}/${scl}`,
    )
  if (kHz !== undefined && (typeof kHz !== "number" || kHz > I2C_MAX_KHZ))
    errors.push(`${id}: i2c kHz ${String(kHz)} is over the ADE7953's ${I2C_MAX_KHZ} kHz`)
  return errors
}
/**
 * The pulse inputs a board's firmware counts (firmware/pulses.ts, issue 20): a jacdac-c button
 * service on each pulse pin, sampled in C every 9 ms, active low (a contact or an S0 output to
 * ground against the pull-up the service sets), and the board's pulse limits in proto/tunables.json.
 */
export const PULSE_SERVICES = [
  { name: "flowPulse", pin: "FLOW_PULSE" },
  { name: "s0Pulse", pin: "S0_PULSE" },
] as const

function pulseInputErrors(id: string, b: Record<string, unknown>, limits: Record<string, unknown>): string[] {
  const errors: string[] = []
  const services = (b.$services ?? []) as Array<Record<string, unknown>>
  for (const want of PULSE_SERVICES) {
    const s = services.find((x) => x.name === want.name)
    if (!s || s.service !== "button" || s.pin !== want.pin)
      errors.push(
        `${id}: $services needs {"name": "${want.name}", "service": "button", "pin": "${want.pin}"}: the firmware counts that pulse input from its events`,
      )
    else if (s.activeHigh)
      errors.push(`${id}: ${want.name} must be active low (a contact to ground against the pull-up)`)
  }
  if (!Object.hasOwn(limits, id))
    errors.push(
      `${id}: proto/tunables.json pulseInputs.boards has no pulse limits (minPulseMs, maxPulseHz) for this board`,
    )
  return errors
}

/** Transducer output at full range, volts (0.5–4.5 V ratiometric on a 5.000 V supply). */
export const SENSOR_MAX_V = 4.5
/**
 * The highest output the ADC pin must still read linearly: full range on a supply 5 % high (the
 * output is ratiometric: 4.5 V × 1.05 = 4.725 V), plus the 0.1 V beyond the band at which the
 * driver reports an open or shorted sensor (firmware/drivers/pressure.ts outOfRange): 4.825 V.
 */
export const SENSOR_FAULT_V = SENSOR_MAX_V * 1.05 + 0.1

/**
 * What a board definition gets wrong for a meter: an analog or sensor input on a strapping pin, no
 * stated ADC full scale, a divider that lets the transducer's 4.5 V clip the ADC, or a target whose
 * constants differ from the board file. Empty when the board is fine (or not a custom board).
 */
export function boardHardwareErrors(id: string, b = customBoard(id)): string[] {
  if (!b) return []
  const errors: string[] = []
  const pins = (b.pins ?? {}) as Record<string, number>
  const arch = b.archId as string
  // the runtime's board config (dcfg) keys are "pins.<NAME>", at most 15 characters: devs bundle
  // refuses longer ones ("dcfg key too long"), so such a board could never be programmed
  for (const name of Object.keys(pins))
    if (`pins.${name}`.length > 15)
      errors.push(`${id}: pin name ${name} is over 10 characters (dcfg key pins.${name} > 15)`)
  for (const name of SENSOR_PINS)
    if ((STRAPPING_PINS[arch] ?? []).includes(pins[name]))
      errors.push(
        `${id}: ${name} is on GPIO${pins[name]}, a strapping pin of the ${arch} (${STRAPPING_PINS[arch].join(", ")})`,
      )
  errors.push(...i2cErrors(id, arch, pins, b.i2c))
  errors.push(...pulseInputErrors(id, b, PULSE_LIMITS))
  const fs = b.$adcFullScaleV
  const div = b.$pressureDivider
  const linear = b.$adcLinearMaxV
  if (typeof fs !== "number" || typeof div !== "number" || typeof linear !== "number")
    errors.push(`${id}: the board file must state $adcFullScaleV, $adcLinearMaxV and $pressureDivider`)
  else {
    if (linear > fs) errors.push(`${id}: $adcLinearMaxV ${linear} V is above the ADC's full scale ${fs} V`)
    // issue 20: the pin stays inside the ADC's linear range up to a faulty sensor's output
    if (SENSOR_FAULT_V * div > linear)
      errors.push(
        `${id}: ${SENSOR_FAULT_V.toFixed(3)} V (${SENSOR_MAX_V} V on a supply 5 % high, plus the 0.1 V fault margin) x ` +
          `$pressureDivider ${div} = ${(SENSOR_FAULT_V * div).toFixed(2)} V at the pin, over the ADC's linear range ` +
          `($adcLinearMaxV ${linear} V): use a divider of at most ${(Math.floor((linear / SENSOR_FAULT_V) * 1000) / 1000).toFixed(3)}`,
      )
    const target = join(paths.root, "firmware/targets", `${id}.ts`)
    if (existsSync(target)) {
      const src = readFileSync(target, "utf8")
      const num = (k: string) => Number(new RegExp(`${k}: ([0-9.]+)`).exec(src)?.[1])
      if (num("adcFullScaleV") !== fs || num("pressureDivider") !== div)
        errors.push(
          `${id}: firmware/targets/${id}.ts adcFullScaleV/pressureDivider differ from the board file (${fs}, ${div})`,
        )
    }
  }
  return errors
}

/** "unknown board" with this repository's meter boards first, then the simulator, then the rest. */
export function unknownBoardMessage(id: string): string {
  const ours = customBoards().sort()
  const generic = builtinBoards()
    .filter((b) => !ours.includes(b))
    .sort()
  return (
    `unknown board '${id}': citymeter boards: ${ours.join(", ")}; simulator: sim` +
    ` (DeviceScript's generic boards also work: ${generic.join(", ")}; or add boards/${id}.board.json)`
  )
}

/**
 * Why a board cannot use a TLS broker (`mqtts://`, MQTT_PROTO=tls), or undefined when it can. The
 * Pico W runtime's sockets have no TLS: DeviceScript asks for TLS with a negative port
 * (@devicescript/net sockets.ts: `proto === "tls" ? -port : port`) and devicescript-pico's
 * src/lwip_sock.c jd_tcpsock_new refuses any port outside 1..65535, so such a meter never connects.
 * Any board on the rp2040w chip, the stock pico_w included.
 */
export function tlsError(id: string): string | undefined {
  const arch = boardArch(id)
  if (arch !== "rp2040w") return undefined
  return (
    `${id} (rp2040w) cannot use mqtts://: the Pico W's DeviceScript runtime has no TLS (its lwIP sockets refuse ` +
    `a TLS connection, devicescript-pico src/lwip_sock.c), so the meter would never connect. Its frames are sealed end to end (AES-CCM per meter) whatever the ` +
    `transport: use mqtt:// on a network you trust, or an ESP32 board (citymeter_esp32c3, citymeter_esp32s3) for TLS`
  )
}
