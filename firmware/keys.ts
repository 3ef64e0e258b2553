// The meter's sealing keys (proto/topics.md "Sealed frames"; the crypto is seal.ts): with a
// SEAL_KEY every uplink is sealed and only sealed downlinks are accepted; without one, frames go
// open. A key rotation (proto Config.seal_key) keeps the previous key for downlinks until reboot.
import { loadNewestDownlinkMs, loadSealKey, saveNewestDownlinkMs, saveSealKey } from "./flash-records"
import { Downlink, Uplink, encodeSealedUplink, encodeUplink, openDownlink } from "./frames"
import { downKindCode, keyId, nonceMillis, parseKey } from "./seal"

export class SealKeys {
    /** The key before a rotation: downlinks sealed before the bridge saw the switch still open. */
    private previous: Buffer | undefined = undefined

    /**
     * `key`: undefined when the meter has none (frames go open). `newestDownMs`: nonce time (ms)
     * of the newest config, time or update downlink accepted: older ones are replays.
     */
    constructor(
        private key: Buffer | undefined,
        private newestDownMs: number,
    ) {}

    sealed(): boolean {
        return !!this.key
    }

    /** Birth.key_id: the current key's id, 0 when frames go open. */
    keyId(): number {
        return this.key ? keyId(this.key) : 0
    }

    /** An uplink's bytes: sealed under the current key, or open without one. */
    encode(u: Uplink): Buffer {
        return this.key ? encodeSealedUplink(u, this.key) : encodeUplink(u)
    }

    /**
     * The downlink to act on: `d` itself when frames go open; when sealed, its content opened with
     * the key (or the previous one), or undefined when it is unsealed, forged or a replay. An update
     * window is acted on only sealed (proto UpdateWindow: the link it arms can deploy any program),
     * so a meter without a key refuses every one.
     */
    open(topic: string, d: Downlink): Downlink | undefined {
        if (!this.key) return d.update ? undefined : d
        const nonce = d.nonce
        if (!nonce) return undefined // not sealed
        const kind = downKindCode(topic.slice(topic.lastIndexOf("/") + 1))
        let inner = openDownlink(d, kind, this.key)
        if (!inner && this.previous) inner = openDownlink(d, kind, this.previous)
        if (!inner) return undefined
        if (inner.config || inner.time || inner.update) {
            const ms = nonceMillis(nonce)
            if (ms <= this.newestDownMs) return undefined // a replay (or older than one accepted)
            this.newestDownMs = ms
            // kept across reboots (the DL_MS record): a config or an update window is never replayed
            if (inner.config || inner.update)
                setTimeout(async () => {
                    await saveNewestDownlinkMs(ms)
                }, 0)
        }
        return inner
    }

    /**
     * Key rotation (proto Config.seal_key): persists the next key and switches to it. False when
     * refused (not 32 bytes, or a meter that does not seal); the old key still opens downlinks
     * until the next reboot.
     */
    async rotate(next: Buffer): Promise<boolean> {
        if (next.length !== 32 || !this.key) return false
        await saveSealKey(next.toString("hex"))
        this.previous = this.key
        this.key = next
        console.log(`citymeter: sealing key rotated (key id ${keyId(next)})`)
        return true
    }
}

/** The keys as flash holds them. */
export async function loadSealKeys(): Promise<SealKeys> {
    const key = parseKey(await loadSealKey())
    return new SealKeys(key, await loadNewestDownlinkMs())
}
