// Electricity metering: S0 pulse outputs (DIN 43864 / IEC 62053-31, impulses per kWh) and the
// PZEM-004T v3 metering IC (Modbus RTU, function 0x04, 10 input registers). Both expose the
// citymeter Electricity Meter service (services/electricitymeter.md).
//
// DeviceScript gives user code no UART, so the PZEM-004T frames here are built and parsed (and
// tested) but need a UART bridge (e.g. an I2C-UART chip) to reach the meter. S0 impulses are
// counted from a button service sampling the S0 pin in C (../pulses.ts), within the board's pulse
// limits (proto/tunables.json pulseInputs). @devicescript/gpio's subscribeDigital, used before,
// polled every 100 ms in JavaScript, lost most 30 ms impulses and reported the idle level of its
// first poll as an edge: one phantom impulse per boot (issue 20).
import * as ds from "@devicescript/core"
import { SensorServer, startServer } from "@devicescript/server"
import { countPulses } from "../pulses"

/** Energy of `impulses` S0 impulses, Wh, rounded down. */
export function s0ToWh(impulses: number, impPerKwh: number): number {
    return Math.floor((impulses * 1000) / impPerKwh)
}

/** Active power from the time between two S0 impulses: P = 3.6e6 / (imp/kWh × Δt[s]) W. */
export function s0PowerW(gapMs: number, impPerKwh: number): number {
    if (gapMs <= 0) return 0
    return Math.round(3600000000 / (impPerKwh * gapMs))
}

/** Modbus RTU CRC-16 (polynomial 0xA001, init 0xFFFF), as sent low byte first. */
export function modbusCrc16(b: Buffer, len: number): number {
    let crc = 0xffff
    for (let i = 0; i < len; ++i) {
        crc = crc ^ b.getAt(i, "u8")
        for (let k = 0; k < 8; ++k) crc = crc & 1 ? (crc >> 1) ^ 0xa001 : crc >> 1
    }
    return crc & 0xffff
}

/** "Read input registers 0x0000..0x0009" request for a PZEM-004T at `address` (1..247). */
export function pzemReadRequest(address: number): Buffer {
    const b = Buffer.alloc(8)
    b.setAt(0, "u8", address)
    b.setAt(1, "u8", 0x04)
    b.setAt(2, "u8", 0)
    b.setAt(3, "u8", 0)
    b.setAt(4, "u8", 0)
    b.setAt(5, "u8", 10)
    const crc = modbusCrc16(b, 6)
    b.setAt(6, "u8", crc & 0xff)
    b.setAt(7, "u8", crc >> 8)
    return b
}

export interface PzemReading {
    voltageDv: number
    currentMa: number
    powerW: number
    energyWh: number
    frequencyDhz: number
    powerFactorPct: number
}

function reg(b: Buffer, i: number): number {
    return b.getAt(3 + i * 2, "u8") * 256 + b.getAt(4 + i * 2, "u8")
}

/** Parses a PZEM-004T response (25 bytes); undefined when the frame or its CRC is bad. */
export function parsePzemResponse(b: Buffer): PzemReading {
    if (b.length < 25 || b.getAt(1, "u8") !== 0x04 || b.getAt(2, "u8") !== 20) return undefined
    const crc = modbusCrc16(b, 23)
    if (b.getAt(23, "u8") !== (crc & 0xff) || b.getAt(24, "u8") !== crc >> 8) return undefined
    // 32-bit values come low word first
    return {
        voltageDv: reg(b, 0),
        currentMa: reg(b, 1) + reg(b, 2) * 65536,
        powerW: Math.round((reg(b, 3) + reg(b, 4) * 65536) / 10),
        energyWh: reg(b, 5) + reg(b, 6) * 65536,
        frequencyDhz: reg(b, 7),
        powerFactorPct: reg(b, 8),
    }
}

export class S0Counter {
    impulses = 0
    powerW = 0
    private lastMs: number = undefined
    /** Energy counted under earlier constants (a config downlink changed it), Wh. */
    private baseWh = 0
    constructor(public impPerKwh: number) {}
    /** New impulses/kWh from now on: impulses already counted keep the energy they had. */
    setImpPerKwh(k: number) {
        if (k === this.impPerKwh) return
        this.baseWh = this.baseWh + s0ToWh(this.impulses, this.impPerKwh)
        this.impulses = 0
        this.impPerKwh = k
    }
    impulse(nowMs: number) {
        if (this.lastMs !== undefined) this.powerW = s0PowerW(nowMs - this.lastMs, this.impPerKwh)
        this.lastMs = nowMs
        this.impulses = this.impulses + 1
    }
    /** Power decays to 0 when no impulse came for longer than the last gap would allow. */
    settle(nowMs: number) {
        if (this.lastMs !== undefined && this.powerW > 0 && s0PowerW(nowMs - this.lastMs, this.impPerKwh) < this.powerW)
            this.powerW = s0PowerW(nowMs - this.lastMs, this.impPerKwh)
    }
    energyWh() {
        return this.baseWh + s0ToWh(this.impulses, this.impPerKwh)
    }
}

/** What the Electricity Meter service serves: an S0 input or a metering IC (ade7953.ts). */
export interface EnergySource {
    /** Cumulative energy, Wh, since this source started. */
    energyWh(): number
    powerW(): number
    voltageDv(): number
}

/** An S0 input as an energy source: no voltage (the nominal supply, which is not sent), estimated power. */
export function s0Source(s0: S0Counter, nominalDv: number): EnergySource {
    return {
        energyWh: () => s0.energyWh(),
        powerW: () => {
            s0.settle(ds.millis())
            return s0.powerW
        },
        // an S0 output carries no voltage: the nominal supply, which the meter does not send or
        // alarm on (hardware.ts measures.voltage)
        voltageDv: () => nominalDv,
    }
}

/**
 * The energy register the service serves, continuous across a change of source: when a metering IC
 * that answered late replaces the S0 input, the register goes on from the S0 energy counted so far
 * and adds what the IC counts from then on. The meter program sees one counter that never steps back
 * (a step back would read as a counter restart, firmware/sampler.ts counterDelta).
 */
export class SwitchableEnergy {
    private baseWh = 0
    private startWh = 0
    constructor(public source: EnergySource) {}
    switchTo(next: EnergySource) {
        this.baseWh = this.energyWh()
        this.source = next
        this.startWh = next.energyWh()
    }
    energyWh(): number {
        return this.baseWh + this.source.energyWh() - this.startWh
    }
}

class ElectricityServer extends SensorServer implements ds.CitymeterElectricityMeterServerSpec {
    constructor(private readonly e: SwitchableEnergy) {
        super(ds.CitymeterElectricityMeter.spec)
    }
    reading() {
        return this.e.energyWh()
    }
    power() {
        return this.e.source.powerW()
    }
    voltage() {
        return this.e.source.voltageDv()
    }
}

/** Serves the Electricity Meter service from `e` (its source may change later). */
export function startElectricityMeter(e: SwitchableEnergy) {
    startServer(new ElectricityServer(e))
}

/** Counts an S0 output's impulses from its button-service role (sampled in C, firmware/pulses.ts). */
export function startS0Counter(input: ds.Button, impPerKwh: number): S0Counter {
    const s0 = new S0Counter(impPerKwh)
    countPulses(input, () => s0.impulse(ds.millis()))
    return s0
}
