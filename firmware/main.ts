import * as ds from "@devicescript/core"
import { readSetting } from "@devicescript/settings"
const flow = new ds.CitymeterWaterFlow()
setInterval(async () => {
    const v = await flow.reading.read()
    const id = await readSetting("METER_ID", "none")
    console.log(`vol=${v} id=${id}`)
}, 1000)
