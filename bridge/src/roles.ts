// What one bridge process runs (MODE; README "Running API and ingest apart"). `all` is the one
// process of the demo and of small sites. In production the open-data API and ingest can run as
// separate processes against one PostgreSQL, so that no reader shares a process (event loop,
// memory, file descriptors) with the frames' commits:
// - `api`: the HTTP API only. No uplink subscription, no ingest, no embedded broker, no periodic
//   job that writes. Downlinks (POST /meters/:id/config, resend, rotate-key) leave through a
//   publish-only MQTT connection of its own to MQTT_URL: the operators' tools talk to the API,
//   and an API that cannot reach meters would leave them none. Without MQTT_URL it is a read-only
//   front: downlinks answer 503 CM_ERR_NO_DOWNLINK.
// - `ingest`: the uplink subscription, ingest and the periodic jobs (inactivity check, dead-letter
//   retention, readings partitions and retention, the NGSI-LD forwarder). Its HTTP listener
//   serves /healthz, /readyz and /metrics only, for the orchestrator's probes and Prometheus.
// The periodic jobs belong to ingest: they write (INACTIVE alarms, pruning, partition DDL), the
// partitions they make ahead are the ones ingest writes into, the dead letters they bound are the
// ones ingest adds, and the forwarder and the inactivity check feed ingest's live bus. API
// processes can then be scaled out and restarted freely, and are read-mostly.
export const SERVICE_ROLES = ["all", "api", "ingest"] as const
export type ServiceRole = (typeof SERVICE_ROLES)[number]

/** MODE's value as a role; undefined when it is not one. Unset or empty: all. */
export function parseRole(raw: string | undefined): ServiceRole | undefined {
  if (!raw) return "all"
  return SERVICE_ROLES.find((r) => r === raw)
}

export const roleValueError = (raw: string) =>
  `MODE must be one of ${SERVICE_ROLES.join(", ")} (got '${raw}'): all runs the API and ingest in one process, api the HTTP API only, ingest the uplink subscription and ingest only`

/** What a role needs of the service configuration (ServiceConfig in service.ts). */
export interface RoleNeeds {
  databaseUrl: string
  mqttUrl?: string
}

/** Why the configuration cannot run in its role (a message saying what to set), or undefined. */
export function roleRefusal(role: ServiceRole, c: RoleNeeds): string | undefined {
  if (role === "all") return undefined
  if (!/^postgres(ql)?:\/\//.test(c.databaseUrl))
    return `MODE=${role} runs beside another process on one database: it needs PostgreSQL (DATABASE_URL=postgres://…). The embedded engine (${c.databaseUrl.split(":")[0]}:) belongs to one process: run MODE=all`
  if (role === "ingest" && !c.mqttUrl)
    return "MODE=ingest subscribes to the utility's broker: set MQTT_URL (the embedded broker runs only with MODE=all)"
  return undefined
}
