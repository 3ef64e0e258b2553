// Board ids: DeviceScript's built-in boards (@dsboard/<id> in @devicescript/core) plus this
// repository's boards/<id>.board.json, plus "sim" for the simulator.
import { existsSync, readFileSync, readdirSync } from "node:fs"
import { createRequire } from "node:module"
import { join } from "node:path"
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
 * Bytes of the DeviceScript settings store (the only flash a program has): 16 KB on ESP32,
 * 8 KB on the Pico W (DeviceScript 2.16 runtime sources); the simulator formats 8144 B free.
 * A custom board states it as "$settingsBankBytes".
 */
export function settingsBankBytes(id: string): number {
  const stated = customBoard(id)?.$settingsBankBytes
  if (typeof stated === "number") return stated
  const family = boardFamily(id)
  return family === "esp32" ? 16384 : family === "rp2040" ? 8192 : 8144
}

/** ESP32-C3 strapping pins (datasheet: GPIO2, GPIO8, GPIO9): no sensor input may sit on them. */
export const STRAPPING_PINS: Record<string, number[]> = { esp32c3: [2, 8, 9] }
/** Transducer output at full range, volts (0.5–4.5 V ratiometric). */
const SENSOR_MAX_V = 4.5

/**
 * What a board definition gets wrong for a meter: an analog or sensor input on a strapping pin, no
 * stated ADC full scale, a divider that lets the transducer's 4.5 V clip the ADC, or a target whose
 * constants differ from the board file. Empty when the board is fine (or not a custom board).
 */
export function boardHardwareErrors(id: string): string[] {
  const b = customBoard(id)
  if (!b) return []
  const errors: string[] = []
  const pins = (b.pins ?? {}) as Record<string, number>
  const arch = b.archId as string
  // the runtime's board config (dcfg) keys are "pins.<NAME>", at most 15 characters: devs bundle
  // refuses longer ones ("dcfg key too long"), so such a board could never be programmed
  for (const name of Object.keys(pins))
    if (`pins.${name}`.length > 15)
      errors.push(`${id}: pin name ${name} is over 10 characters (dcfg key pins.${name} > 15)`)
  for (const name of ["FLOW_PULSE", "S0_PULSE", "TAMPER", "PRESS_ADC"])
    if ((STRAPPING_PINS[arch] ?? []).includes(pins[name]))
      errors.push(
        `${id}: ${name} is on GPIO${pins[name]}, a strapping pin of the ${arch} (${STRAPPING_PINS[arch].join(", ")})`,
      )
  const fs = b.$adcFullScaleV
  const div = b.$pressureDivider
  if (typeof fs !== "number" || typeof div !== "number")
    errors.push(`${id}: the board file must state $adcFullScaleV and $pressureDivider`)
  else {
    if (SENSOR_MAX_V * div > fs)
      errors.push(
        `${id}: ${SENSOR_MAX_V} V x $pressureDivider ${div} = ${(SENSOR_MAX_V * div).toFixed(2)} V clips the ${fs} V ADC`,
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
