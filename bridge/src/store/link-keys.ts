// Each meter's WSSK link key (issue 23): the runtime's own cloud link (bridge/src/wssk/) proves it
// holds this 32-byte key, as frames prove the sealing key. A second secret per meter, apart from the
// sealing key; like it, it never leaves the bridge (no route answer, log or export includes it).

export interface LinkKeyStore {
  /** The meter's link key: undefined when the meter is unknown, null when it has none. */
  linkKey(meterId: string): Promise<Uint8Array | null | undefined>
  /** Sets (or with null clears) a registered meter's link key. Returns false when the meter is unknown. */
  setLinkKey(meterId: string, key: Uint8Array | null): Promise<boolean>
}
