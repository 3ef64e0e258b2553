// Raw settings values (DeviceScript's settings store, the meter's only persistence), read and written
// with a read-back. A write the store refuses (jacdac-c jd_fstor.c returns -3 when a value does not
// fit, and the settings service ignores it: services/settings.c line 60) is seen only by reading the
// value back.
import * as ds from "@devicescript/core"
import { settings } from "@devicescript/settings"

/** Reads a raw settings value (readSetting() of @devicescript/settings is JSON-only). */
export async function readRaw(key: string): Promise<Buffer> {
    const pkt = await ds.actionReport(
        settings,
        "get",
        async () => await settings.get(key),
        (p) => p.decode()[0] === key,
    )
    const [, value] = pkt.decode()
    return value as Buffer
}

/**
 * Writes a raw settings value and reads it back: true when flash holds exactly these bytes. The
 * settings service handles commands in order, so the read answers after the write was handled
 * (and after the runtime synced its flash, jd_fstor.c line 332): a power cut after this finds it.
 */
export async function writeChecked(key: string, value: Buffer): Promise<boolean> {
    await settings.set(key, value)
    const back = await readRaw(key)
    return !!back && back.length === value.length && back.toString("hex") === value.toString("hex")
}
