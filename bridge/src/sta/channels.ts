// What a meter measures, as SensorThings describes it: each channel a Datastream (CHANNELS), the
// instrument kinds (Sensors) and the phenomena (ObservedProperties, electricity with its OBIS code,
// IEC 62056-6-1). Units are UCUM codes. A new channel is an entry in CHANNELS (and in
// OBSERVED_PROPERTIES, if its phenomenon is new); the views (measurement-sets.ts) read them.
import { OBIS } from "../store/columns.js"

interface Channel {
  /** The Datastream's channel key (the part after ':' of its id). */
  ch: string
  /** proto Channel the meter's Birth lists when it measures this (meters.channels). */
  proto: string
  label: string
  description: string
  /** The reading column and how its value becomes the result (in the unit below). */
  result: string
  unit: { name: string; symbol: string }
  sensor: string
  observedProperty: string
}

/**
 * The Datastreams of a meter. Totals are the meter's registers; the other channels are per
 * interval (mean power, voltage and pressure over the interval, volume and energy in it).
 */
export const CHANNELS: readonly Channel[] = [
  {
    ch: "water",
    proto: "CHANNEL_WATER",
    label: "water volume",
    description: "Water volume per interval",
    result: "r.volume_ml",
    unit: { name: "millilitre", symbol: "mL" },
    sensor: "water-meter",
    observedProperty: "water-volume",
  },
  {
    ch: "waterTotal",
    proto: "CHANNEL_WATER",
    label: "water register",
    description: "Water volume register (cumulative) at the end of each interval",
    result: "r.water_total_ml",
    unit: { name: "millilitre", symbol: "mL" },
    sensor: "water-meter",
    observedProperty: "water-volume",
  },
  {
    ch: "energy",
    proto: "CHANNEL_ENERGY",
    label: "active energy",
    description: `Imported active energy per interval (the increase of register ${OBIS.activeEnergyImport})`,
    result: "r.energy_wh",
    unit: { name: "watt hour", symbol: "W.h" },
    sensor: "electricity-meter",
    observedProperty: "active-energy-import",
  },
  {
    ch: "energyTotal",
    proto: "CHANNEL_ENERGY",
    label: "active energy register",
    description: `Imported active energy register ${OBIS.activeEnergyImport} at the end of each interval`,
    result: "r.energy_total_wh",
    unit: { name: "watt hour", symbol: "W.h" },
    sensor: "electricity-meter",
    observedProperty: "active-energy-import",
  },
  {
    ch: "power",
    proto: "CHANNEL_POWER",
    label: "active power",
    description: "Mean active power per interval",
    result: "r.power_w",
    unit: { name: "watt", symbol: "W" },
    sensor: "electricity-meter",
    observedProperty: "active-power",
  },
  {
    ch: "voltage",
    proto: "CHANNEL_VOLTAGE",
    label: "voltage",
    description: "Mean RMS voltage L1 per interval",
    // stored in decivolts
    result: "(r.voltage_dv / 10.0)",
    unit: { name: "volt", symbol: "V" },
    sensor: "electricity-meter",
    observedProperty: "voltage-l1",
  },
  {
    ch: "pressure",
    proto: "CHANNEL_PRESSURE",
    label: "water pressure",
    description: "Mean water pressure per interval",
    result: "r.pressure_avg_pa",
    unit: { name: "pascal", symbol: "Pa" },
    sensor: "pressure-sensor",
    observedProperty: "water-pressure",
  },
]
export const CHANNEL_BY_KEY = new Map(CHANNELS.map((c) => [c.ch, c]))

export const SENSORS = [
  {
    id: "water-meter",
    name: "water meter register",
    description: "Pulse or reed output of a water meter counted by the citymeter board (forward and reverse volume)",
  },
  {
    id: "electricity-meter",
    name: "electricity metering",
    description:
      "S0 pulse output of an electricity meter, or an ADE7953 metering IC (active energy, power and RMS voltage)",
  },
  {
    id: "pressure-sensor",
    name: "water pressure transducer",
    description: "0.5-4.5 V ratiometric pressure transducer on the board's ADC",
  },
].map((s) => ({ ...s, encodingType: "text/plain", metadata: s.description }))

/** OBIS codes (IEC 62056-6-1) for electricity; water quantities have no OBIS code here. */
export const OBSERVED_PROPERTIES = [
  {
    id: "water-volume",
    name: "Water volume",
    definition: "https://en.wikipedia.org/wiki/Water_meter",
    description: "Volume of drinking water that flowed through the meter",
    obis: null,
  },
  {
    id: "active-energy-import",
    name: "Imported active energy",
    definition: `urn:obis:${OBIS.activeEnergyImport}`,
    description: `Active energy imported from the grid (OBIS ${OBIS.activeEnergyImport}, A+ total)`,
    obis: OBIS.activeEnergyImport,
  },
  {
    id: "active-power",
    name: "Active power",
    definition: `urn:obis:${OBIS.activePower}`,
    description: `Active power (OBIS ${OBIS.activePower}), the interval's signed mean (negative: export)`,
    obis: OBIS.activePower,
  },
  {
    id: "voltage-l1",
    name: "Voltage L1",
    definition: `urn:obis:${OBIS.voltageL1}`,
    description: `RMS voltage of phase L1 (OBIS ${OBIS.voltageL1}), averaged over the interval`,
    obis: OBIS.voltageL1,
  },
  {
    id: "water-pressure",
    name: "Water pressure",
    definition: "https://en.wikipedia.org/wiki/Pressure",
    description: "Gauge pressure of the water main at the meter",
    obis: null,
  },
]
