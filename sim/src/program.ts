// Which program a simulated meter's VM runs at power-on. The runtime keeps the deployed program
// in its settings store under the large key `*prog` (DeviceScript runtime/devicescript/devsmgr.c
// devsmgr_deploy_start → jd_settings_prep_large) and runs it at boot (devsmgr_init, try_run).
// "file": the host deploys the .devs file at every start (as `devs run` does), so a deploy over
// the air is undone by a power cycle. "flash": the host deploys the file only into a flash with
// no `*prog` record yet, and a board's power cycle is what it is: the VM runs what was deployed
// last, or, after a deploy cut before its end, nothing (the record's magic1 is written last).
import { createHash } from "node:crypto"
import { fstorValue, readFstor } from "./fstor.js"

export type ProgramFrom = "file" | "flash"

/** devsmgr.c DEVSMGR_PROG_MAGIC0/1 and the header before the image (devsmgr_program_header_t). */
const MAGIC0 = 0x8d8abd53
const MAGIC1 = 0xb27c4b2b
const HEADER_BYTES = 128

export interface StoredProgram {
  /** The image size the deploy announced (0x94, devsmgr_deploy_start). */
  size: number
  /** Both magics written: the deploy finished (0x96) and the runtime runs it (devs_header). */
  complete: boolean
  /** SHA-256 of the image, as 0x93 answers it (devsmgr_get_hash), when complete. */
  sha256?: string
}

/** The `*prog` record of a flash image, or undefined when the runtime has been given no program. */
export function storedProgram(image: Uint8Array): StoredProgram | undefined {
  const bank = readFstor(image)
  const rec = bank && fstorValue(image, bank, "*prog")
  if (!rec || rec.length < 8 || rec.readUInt32LE(0) !== MAGIC0) return rec ? { size: 0, complete: false } : undefined
  const size = rec.readUInt32LE(4)
  const complete = rec.length >= HEADER_BYTES + size && rec.readUInt32LE(8) === MAGIC1
  const sha256 = complete
    ? createHash("sha256")
        .update(rec.subarray(HEADER_BYTES, HEADER_BYTES + size))
        .digest("hex")
    : undefined
  return { size, complete, sha256 }
}

/** Whether start() deploys the .devs file into a VM whose flash is `image`. */
export const deploysFile = (from: ProgramFrom, image: Uint8Array) =>
  from === "file" || storedProgram(image) === undefined
