// A simulated meter: the real firmware bytecode in its own DeviceScript VM, on its own Jacdac bus,
// with jacdac-ts servers for the three citymeter sensor services, and its own flash file.
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import {
  CloudConfigurationCmd,
  JDBus,
  JDServerServiceProvider,
  SRV_BUTTON,
  SRV_CLOUD_CONFIGURATION,
  SRV_MAGNETIC_FIELD_LEVEL,
  SRV_SETTINGS,
  SensorServer,
  SettingsClient,
  SystemReg,
  delay,
  loadServiceSpecifications,
} from "jacdac-ts"
import { join } from "node:path"
import { TUNABLE_BY_KEY } from "../../bridge/src/tunables/schema.js"
import { createVmBus, vmService } from "./bus.js"
import { paths } from "./paths.js"
import { DEFAULT_PULSE_WIDTH_MS, PulseTrain, type PulseOutput } from "./physics.js"
import { deploysFile, type ProgramFrom } from "./program.js"
import { SimPulseOutput } from "./pulse-output.js"
import { defaultSettings } from "./settings-files.js"
import { createVm, type DevsVm } from "./vm.js"

// Service classes and register codes from services/*.md
export const SRV_WATER_FLOW = 0x1c1e7f01
export const SRV_ELECTRICITY = 0x1c1e7f02
export const SRV_PRESSURE = 0x1c1e7f03
export const SRV_PULSE_INPUTS = 0x1c1e7f04
/** services/pulseinputs.md: the pulse outputs the host simulates, bit 0 water, bit 1 S0. */
const SIM_WATER = 1
const SIM_S0 = 2
const REG_EXTRA_1 = 0x180
const REG_EXTRA_2 = 0x181

let specsLoaded = false
function loadSpecs() {
  if (specsLoaded) return
  if (!existsSync(paths.servicesJson))
    throw new Error(`${paths.servicesJson} is missing: run \`npm run build:firmware\` first`)
  loadServiceSpecifications(JSON.parse(readFileSync(paths.servicesJson, "utf8")))
  specsLoaded = true
}

export interface SimMeterOptions {
  meterId: string
  /** Overrides on top of .env.defaults / .env.local (e.g. MQTT_PORT, INTERVAL_S). */
  settings?: Record<string, string | number | boolean>
  /** Flash image file; survives stop()/start() like a meter's flash survives power loss. */
  flashFile?: string
  /**
   * The bytecode to run: a file `citymeter build` wrote (the sim runs the very file that is
   * flashed). Default: the board's build (`board`), else firmware/main.ts's (npm run build:firmware).
   */
  bytecodeFile?: string
  /** A board id: runs .devicescript/boards/<board>.devs (npm run build:boards), the board's target. */
  board?: string
  /**
   * "file" (default): start() deploys bytecodeFile at every power-on. "flash": only into a flash
   * that holds no program yet; then the VM runs what its flash holds, as a board does after a
   * deploy over the air (sim/src/program.ts).
   */
  programFrom?: ProgramFrom
  /** The firmware's console.log lines ("> …"), the runtime's other messages (dmesg) and its errors. */
  log?: (line: string, kind: MeterLineKind) => void
  /**
   * How the water meter reaches the firmware. "pulses" (default, as on every board): the host
   * simulates the meter's pulse output driven by the flow (setWaterFlow) as a button server on the
   * board's flowPulse role, sampled on the board's 9 ms grid (sim/src/pulse-output.ts), and the
   * firmware's own water flow driver counts its events as on a board; its count is in the VM's
   * RAM, so pulses while the meter is off or restarting are lost, as on a board. The board builds
   * start that driver (firmware/drivers/start.ts): without a `board` or `bytecodeFile` the meter
   * runs the DEFAULT_BOARD build. "register": the host serves the Water Flow service with
   * cumulative volumes (setWater) that run on while the meter is off — a meter with a readable
   * register, which no board here has; the choice for time-compressed runs and reverse flow.
   */
  water?: "register" | "pulses"
  /**
   * How the electricity meter reaches the firmware: "register" (default) serves the Electricity
   * Meter service (setElectricity); "pulses" simulates its S0 output (setS0Power), counted by the
   * firmware's S0 driver (a board build, as for water "pulses").
   */
  electricity?: "register" | "pulses"
  /** The S0 output: impulses per kWh (default: the settings' IMP_PER_KWH) and width (default 30 ms). */
  s0?: { impPerKwh?: number; widthMs?: number }
  /**
   * The pulse output: pulses per litre (default: the settings' PULSES_PER_L, else its default, 1),
   * width (default: the settings' PULSE_MS, at least DEFAULT_PULSE_WIDTH_MS), phase (default 0).
   */
  pulses?: Partial<PulseOutput>
  /** Called with each flash image the VM saves (after every settings record it writes). */
  onFlashSave?: (image: Uint8Array) => void
}

export type MeterLineKind = "console" | "dmesg" | "error"
/** The board build a pulse-output meter runs when no board or bytecode is given (the smallest bank). */
export const DEFAULT_BOARD = "citymeter_picow"

export interface WaterState {
  /** Cumulative forward volume counter, mL (u32, wraps). */
  volumeMl: number
  reverseMl: number
  flowRateMlMin: number
}
export interface ElectricityState {
  energyWh: number
  powerW: number
  voltageDv: number
}

export class SimMeter {
  readonly flow: SensorServer<[number]>
  readonly electricity: SensorServer<[number]>
  readonly pressure: SensorServer<[number]>
  /** Case tamper switch (a Jacdac button: pressure 0..1). */
  readonly tamper: SensorServer<[number]>
  /** Magnetic tamper sensor (Jacdac magnetic field level: strength -1..1). */
  readonly magnet: SensorServer<[number]>
  private readonly flowReverse
  private readonly flowRate
  private readonly power
  private readonly voltage
  private vm?: DevsVm
  private bus?: JDBus
  private flash: Uint8Array = new Uint8Array(0)
  readonly lines: string[] = []
  /** Which pulse outputs this host simulates (services/pulseinputs.md). */
  readonly pulseInputs: SensorServer<[number]>
  /** The water meter's pulse output (water: "pulses"). */
  readonly waterPulses?: SimPulseOutput
  /** The electricity meter's S0 output (electricity: "pulses"). */
  readonly s0Pulses?: SimPulseOutput

  constructor(readonly options: SimMeterOptions) {
    loadSpecs()
    const stated = (key: string) => Number(options.settings?.[key] ?? TUNABLE_BY_KEY.get(key)!.default)
    const now = performance.now()
    if ((options.water ?? "pulses") === "pulses") {
      const k = options.pulses?.pulsesPerL ?? stated("PULSES_PER_L")
      // the firmware's PULSES_PER_L is an integer >= 1 (firmware/config.ts TUNABLES)
      if (!Number.isInteger(k) || k < 1) throw new Error(`${options.meterId}: PULSES_PER_L ${k} is not an integer >= 1`)
      const train = new PulseTrain(
        // as long as the stated shortest pulse (PULSE_MS), and no shorter than a reed's usual closure
        { widthMs: Math.max(DEFAULT_PULSE_WIDTH_MS, stated("PULSE_MS")), ...options.pulses, pulsesPerL: k },
        now,
      )
      this.waterPulses = new SimPulseOutput(train, now)
    }
    if (options.electricity === "pulses") {
      const k = options.s0?.impPerKwh ?? stated("IMP_PER_KWH")
      if (!Number.isInteger(k) || k < 1) throw new Error(`${options.meterId}: IMP_PER_KWH ${k} is not an integer >= 1`)
      // the same train: an impulse per 1000/k Wh, as a water pulse per 1000/k mL (IEC 62053-31: >= 30 ms)
      this.s0Pulses = new SimPulseOutput(
        new PulseTrain({ pulsesPerL: k, widthMs: options.s0?.widthMs ?? 30 }, now),
        now,
      )
    }
    this.pulseInputs = new SensorServer<[number]>(SRV_PULSE_INPUTS, {
      readingValues: [(this.waterPulses ? SIM_WATER : 0) | (this.s0Pulses ? SIM_S0 : 0)],
    })
    this.flow = new SensorServer<[number]>(SRV_WATER_FLOW, { readingValues: [0] })
    this.electricity = new SensorServer<[number]>(SRV_ELECTRICITY, { readingValues: [0] })
    this.pressure = new SensorServer<[number]>(SRV_PRESSURE, { readingValues: [0] })
    this.tamper = new SensorServer<[number]>(SRV_BUTTON, { readingValues: [0] })
    this.magnet = new SensorServer<[number]>(SRV_MAGNETIC_FIELD_LEVEL, { readingValues: [0] })
    this.flowReverse = this.flow.addRegister<[number]>(REG_EXTRA_1, [0])
    this.flowRate = this.flow.addRegister<[number]>(REG_EXTRA_2, [0])
    this.power = this.electricity.addRegister<[number]>(REG_EXTRA_1, [0])
    this.voltage = this.electricity.addRegister<[number]>(REG_EXTRA_2, [0])
  }

  /** The water meter's pulse train (water: "pulses"): what it generated. */
  get pulseTrain(): PulseTrain | undefined {
    return this.waterPulses?.train
  }

  /** The .devs file this meter runs. */
  get bytecodeFile(): string {
    const { bytecodeFile, water } = this.options
    const board = this.options.board ?? ((water ?? "pulses") === "pulses" ? DEFAULT_BOARD : undefined)
    return bytecodeFile ?? (board ? join(paths.root, ".devicescript/boards", `${board}.devs`) : paths.bytecode)
  }

  get meterId() {
    return this.options.meterId
  }

  get running() {
    return !!this.vm
  }

  setWater(s: Partial<WaterState>) {
    if (this.waterPulses && (s.volumeMl !== undefined || s.flowRateMlMin !== undefined))
      throw new Error(`${this.meterId}: a pulse output follows the flow: use setWaterFlow`)
    if (s.volumeMl !== undefined) this.flow.reading.setValues([s.volumeMl >>> 0])
    if (s.reverseMl !== undefined) this.flowReverse.setValues([s.reverseMl >>> 0])
    if (s.flowRateMlMin !== undefined) this.flowRate.setValues([s.flowRateMlMin | 0])
  }

  /** The flow through a pulse-output meter from now on, mL/min (water: "pulses"). */
  setWaterFlow(mlMin: number) {
    if (!this.waterPulses) throw new Error(`${this.meterId}: setWaterFlow needs water: "pulses"`)
    this.waterPulses.setRate(performance.now(), mlMin)
  }

  /** The power through an S0-output meter from now on, W (electricity: "pulses"). */
  setS0Power(powerW: number) {
    if (!this.s0Pulses) throw new Error(`${this.meterId}: setS0Power needs electricity: "pulses"`)
    this.s0Pulses.setRate(performance.now(), powerW / 60) // Wh/min
  }

  /** Energy of the S0 impulses the output generated, Wh: what a meter counting every impulse shows. */
  get pulsedEnergyWh(): number {
    const t = this.s0Pulses?.train
    return t ? Math.floor((t.pulses * 1000) / t.output.pulsesPerL) : 0
  }

  /** Volume of the pulses the output generated, mL: what a meter counting every pulse shows. */
  get pulsedWaterMl(): number {
    const t = this.pulseTrain
    return t ? Math.floor((t.pulses * 1000) / t.output.pulsesPerL) : 0
  }

  /**
   * The firmware's own Water Flow register (its driver counting a pulse output), mL, read over the
   * meter's bus; undefined while the firmware serves none.
   */
  async firmwareWaterMl(): Promise<number | undefined> {
    return this.firmwareReading(SRV_WATER_FLOW, this.flow)
  }

  /** The firmware's own Electricity Meter register (its S0 driver's count), Wh; undefined while it serves none. */
  async firmwareEnergyWh(): Promise<number | undefined> {
    return this.firmwareReading(SRV_ELECTRICITY, this.electricity)
  }

  /** The reading of a `serviceClass` service on the meter's bus that is not the host's own `server`. */
  private async firmwareReading(serviceClass: number, server: SensorServer<[number]>): Promise<number | undefined> {
    const service = this.bus?.services({ serviceClass }).find((s) => s.device.deviceId !== server.device?.deviceId)
    if (!service) return undefined
    const reg = service.register(SystemReg.Reading)
    await reg.refresh(true)
    return reg.unpackedValue?.[0] as number | undefined
  }

  setElectricity(s: Partial<ElectricityState>) {
    if (s.energyWh !== undefined) this.electricity.reading.setValues([s.energyWh >>> 0])
    if (s.powerW !== undefined) this.power.setValues([s.powerW | 0])
    if (s.voltageDv !== undefined) this.voltage.setValues([s.voltageDv >>> 0])
  }

  setPressure(pa: number) {
    this.pressure.reading.setValues([pa >>> 0])
  }

  setTamper(open: boolean) {
    this.tamper.reading.setValues([open ? 1 : 0])
  }

  setMagnet(present: boolean) {
    this.magnet.reading.setValues([present ? 1 : 0])
  }

  private logLine(line: string, kind: MeterLineKind) {
    // prefixed with wall-clock seconds (mod 1000 s) to line up with the bridge's log times
    this.lines.push(`${((Date.now() % 1e6) / 1000).toFixed(2)} ${line}`)
    if (this.lines.length > 2000) this.lines.splice(0, 1000)
    this.options.log?.(line, kind)
  }

  /** Powers the meter on: VM, bus, sensors, settings, firmware. */
  async start() {
    if (this.vm) return
    const { flashFile } = this.options
    this.flash = flashFile && existsSync(flashFile) ? new Uint8Array(readFileSync(flashFile)) : this.flash
    const deployFile = deploysFile(this.options.programFrom ?? "file", this.flash)
    const vm = await createVm()
    // the runtime passes the program's console.log lines through dmesg, prefixed "> "
    vm.dmesg = (s) => this.logLine(s, s.startsWith("> ") ? "console" : "dmesg")
    vm.log = (...a) => this.logLine(a.join(" "), "console")
    vm.error = (...a) => this.logLine("error: " + a.join(" "), "error")
    vm.flashLoad = () => this.flash
    vm.flashSave = (data) => {
      this.flash = data // the VM hands over a copy of its flash (em_flash_save)
      if (flashFile) writeFileSync(flashFile, data)
      this.options.onFlashSave?.(data)
    }
    const bus = createVmBus(vm, this.meterId)
    await bus.connect()
    bus.addServiceProvider(
      new JDServerServiceProvider("citymeter-sensors", [
        // a pulse-output meter is counted by the firmware, which then serves its role itself
        ...(this.waterPulses ? [] : [this.flow]),
        ...(this.s0Pulses ? [] : [this.electricity]),
        this.pulseInputs,
        this.pressure,
        // the tamper switch before the pulse outputs: the VM binds a role to the first free service
        // of its class, and creates the main program's tamper role at start, the pulse roles
        // (flowPulse, then s0Pulse) only when the drivers start (firmware/drivers/start.ts)
        this.tamper,
        ...[this.waterPulses, this.s0Pulses].flatMap((o) => (o ? [o.button] : [])),
        this.magnet,
      ]),
    )
    vm.devsSetDeviceId(this.options.meterId)
    vm.devsStart()
    this.vm = vm
    this.bus = bus
    await this.deploySettings()
    // nothing on this side reads the VM's registers after this: jacdac-ts would poll them every 50 ms
    bus.backgroundRefreshRegisters = false
    if (deployFile) {
      if (!existsSync(this.bytecodeFile))
        throw new Error(
          `${this.bytecodeFile} is missing: run \`npm run ${this.bytecodeFile === paths.bytecode ? "build:firmware" : "build:boards"}\` first`,
        )
      const r = vm.devsDeploy(readFileSync(this.bytecodeFile))
      if (r) throw new Error(`firmware deploy failed with code ${r}`)
    }
    // the outputs' levels now are the baseline, as a board's button services read them at boot
    for (const o of [this.waterPulses, this.s0Pulses]) o?.start(performance.now())
  }

  private async deploySettings() {
    const settings: Record<string, string | number | boolean> = {
      ...defaultSettings(),
      METER_ID: this.options.meterId,
      ...this.options.settings,
    }
    // the firmware counts with the constants of the meters it is wired to
    if (this.waterPulses) settings.PULSES_PER_L = this.waterPulses.train.output.pulsesPerL
    if (this.s0Pulses) settings.IMP_PER_KWH = this.s0Pulses.train.output.pulsesPerL
    const client = new SettingsClient(await vmService(this.bus!, SRV_SETTINGS, "settings"))
    for (const [key, value] of Object.entries(settings)) {
      if (key.length > 13) throw new Error(`setting key ${key} is longer than 13 characters`)
      await client.setValue(key, new TextEncoder().encode(JSON.stringify(value)))
    }
  }

  /**
   * Gives the runtime's own cloud link (WSSK) its connection string through the VM's Cloud
   * Configuration service, as a provisioning tool would: the runtime stores it raw under
   * `wssk_connstr` and connects at once, then again after every boot (DeviceScript
   * runtime/devicescript/network/wssk_health.c set_conn_string, wsskhealth_init). "" clears it. The
   * settings service cannot write that key: it stores a program's keys with a ':' in front
   * (jacdac-c services/settings.c line 31).
   */
  async setCloudConnectionString(conn: string) {
    const bus = this.bus
    if (!bus) throw new Error(`${this.meterId}: start the meter first`)
    const service = await vmService(bus, SRV_CLOUD_CONFIGURATION, "cloud configuration")
    await service.sendCmdAsync(CloudConfigurationCmd.SetConnectionString, new TextEncoder().encode(conn), true)
  }

  /** Power loss: the VM stops at once (no shutdown path runs); flash keeps what was written. */
  async stop() {
    const vm = this.vm
    if (!vm) return
    // water keeps flowing through a pulse meter that is off: the train runs on, its pulses unseen
    for (const o of [this.waterPulses, this.s0Pulses]) o?.stop()
    this.vm = undefined
    vm.devsStop()
    vm.sockClose()
    const bus = this.bus
    this.bus = undefined
    await bus?.disconnect()
    bus?.stop?.()
  }

  /**
   * A settings wipe or a re-flash: erases the whole flash image, boot counter, queue and
   * totals with it. Only while the meter is off; the next start() deploys its settings again, as
   * provisioning a re-flashed board does.
   */
  wipeFlash() {
    if (this.vm) throw new Error(`${this.meterId}: wipe the flash of a stopped meter`)
    this.flash = new Uint8Array(0)
    if (this.options.flashFile) rmSync(this.options.flashFile, { force: true })
  }

  /** The flash image as the VM last saved it. */
  get flashImage(): Uint8Array {
    return this.flash
  }

  /** Waits until the firmware prints a console line matching `re`. */
  async waitForLine(re: RegExp, timeoutMs = 20000): Promise<string> {
    const t0 = Date.now()
    for (;;) {
      const hit = this.lines.find((l) => re.test(l))
      if (hit) return hit
      if (Date.now() - t0 > timeoutMs) throw new Error(`${this.meterId}: no line ${re} in ${timeoutMs} ms`)
      await delay(50)
    }
  }
}
