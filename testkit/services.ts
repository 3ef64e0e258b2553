// The real services this machine (and CI, via .ci/run) runs, for the tests, the benchmarks and
// the scripts: PostgreSQL (private schemas, dropped after) and Mosquitto.
import pg from "pg"

export const PG_URL = process.env.TEST_DATABASE_URL ?? "postgres://root@127.0.0.1:5432/test"
export const MOSQUITTO_URL = process.env.TEST_MQTT_URL ?? "mqtt://127.0.0.1:1883"

export async function dropSchema(schema: string) {
  const c = new pg.Client({ connectionString: PG_URL })
  await c.connect()
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
  await c.end()
}
