// The meter's small records in flash, beside the frame queue (store.ts): the boot counter "BOOT", the
// sealing key "SEAL_KEY" (provisioned; replaced by a key rotation) and the nonce time of the newest
// config or update-window downlink accepted, "DL_MS". Their settings keys are written only here:
// meters in the field hold values under them, so they never change.
import { randomBuffer } from "@devicescript/crypto"
import { readSetting, writeSetting } from "@devicescript/settings"

const BOOT_KEY = "BOOT"
const SEAL_KEY = "SEAL_KEY"
const NEWEST_DOWNLINK_KEY = "DL_MS"

/**
 * A meter that has no boot counter (first start, flash wipe, re-flash) starts it at a random value
 * in [2^21, 2^28) (proto Uplink.boot): a new life never reuses an earlier one's (boot, seq), so the
 * bridge never takes its frames for duplicates, and sealed nonces never repeat.
 */
function firstBoot(): number {
    const r = randomBuffer(4)
    let v = 0
    for (let i = 0; i < 4; ++i) v = v * 256 + r.getAt(i, "u8")
    const span = 2 ** 28 - 2 ** 21
    return 2 ** 21 + (v - Math.floor(v / span) * span)
}

/** Counts this boot in flash and returns its number (proto Uplink.boot). */
export async function nextBoot(): Promise<number> {
    const lastBoot = await readSetting<number>(BOOT_KEY, 0)
    const boot = lastBoot > 0 ? lastBoot + 1 : firstBoot()
    await writeSetting(BOOT_KEY, boot)
    return boot
}

/** The sealing key as hex ("" when the meter is not provisioned with one). */
export async function loadSealKey(): Promise<string> {
    return await readSetting<string>(SEAL_KEY, "")
}

export async function saveSealKey(hex: string) {
    await writeSetting(SEAL_KEY, hex)
}

/** Nonce time (ms) of the newest config or update-window downlink accepted; 0 when none was. */
export async function loadNewestDownlinkMs(): Promise<number> {
    return await readSetting<number>(NEWEST_DOWNLINK_KEY, 0)
}

export async function saveNewestDownlinkMs(ms: number) {
    await writeSetting(NEWEST_DOWNLINK_KEY, ms)
}
