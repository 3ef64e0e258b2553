// The Smart Data Models' published JSON Schemas (vendor/smart-data-models, draft 2020-12) as ajv
// validators. Their remote $refs (https://smart-data-models.github.io/data-models/common-schema.json)
// resolve to the vendored copy added under its own $id: ajv has no loadSchema here, so a $ref it
// cannot resolve offline fails the compile instead of reaching the network.
import { readFileSync } from "node:fs"
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js"
import addFormats from "ajv-formats"

const vendored = (path: string) =>
  JSON.parse(readFileSync(new URL(`../vendor/smart-data-models/${path}`, import.meta.url), "utf8")) as Record<
    string,
    unknown
  >

export const SCHEMA_FILES = {
  WaterConsumptionObserved: "dataModel.WaterConsumption/WaterConsumptionObserved",
  ACMeasurement: "dataModel.Energy/ACMeasurement",
  WaterNetwork: "dataModel.WaterDistributionManagementEPANET/WaterNetwork",
} as const

export type ModelName = keyof typeof SCHEMA_FILES

export function modelValidators(): Record<ModelName, ValidateFunction> & { ajv: Ajv2020 } {
  // Unknown keywords and formats stay errors (except the two every model adds); strictRequired and
  // strictTypes are lint rules ajv adds on top of JSON Schema, which the models' allOf style (required
  // ids defined in a referenced allOf branch) does not follow: off.
  const ajv = new Ajv2020({ strict: true, strictRequired: false, strictTypes: false, allErrors: true })
  addFormats.default(ajv)
  ajv.addVocabulary(["$schemaVersion", "modelTags"])
  // common-schema's email definitions use idn-email, which ajv-formats lacks; we emit no email
  ajv.addFormat("idn-email", /^[^\s@]+@[^\s@]+$/u)
  ajv.addSchema(vendored("data-models/common-schema.json"))
  return {
    ajv,
    WaterConsumptionObserved: ajv.compile(vendored(`${SCHEMA_FILES.WaterConsumptionObserved}/schema.json`)),
    ACMeasurement: ajv.compile(vendored(`${SCHEMA_FILES.ACMeasurement}/schema.json`)),
    WaterNetwork: ajv.compile(vendored(`${SCHEMA_FILES.WaterNetwork}/schema.json`)),
  }
}

/** A model's published keyValues example (the control: the validators accept what the model publishes). */
export const publishedExample = (model: ModelName) => vendored(`${SCHEMA_FILES[model]}/examples/example.json`)
