// Errors the CLI reports as one clear line and a non-zero exit code (no stack trace).
import { BRIDGE_DEFAULTS } from "../bridge/src/defaults.js"

export class CliError extends Error {
  constructor(
    message: string,
    /** 2: bad input or usage; 1: the operation failed. */
    readonly exitCode = 1,
  ) {
    super(message)
  }
}

/** Bad input: exit code 2. */
export const usage = (message: string) => new CliError(message, 2)

/** Stack traces only on request: --verbose on the command line, or DEBUG set in the environment. */
export const wantStack = (argv = process.argv) => argv.includes("--verbose") || Boolean(process.env.DEBUG)

type SysError = Error & { code?: string; port?: number; address?: string; path?: string; syscall?: string }

/**
 * One actionable line for the failures a user causes (a port in use, a service that is not there,
 * a missing file); undefined for anything else (a bug: its stack is what helps).
 */
export function userErrorLine(e: unknown): string | undefined {
  if (e instanceof CliError) return e.message
  // the bridge's own "this setting cannot work" errors already say what to set
  const name = (e as Error)?.constructor?.name
  if (name === "ServiceConfigError" || name === "StoreConfigError") return (e as Error).message
  const err = (e as { cause?: SysError }).cause?.code ? (e as { cause: SysError }).cause : (e as SysError)
  if (!err || typeof err !== "object") return undefined
  const where = err.port !== undefined ? `${err.address ?? ""}:${err.port}` : ""
  switch (err.code) {
    case "EADDRINUSE":
      return (
        `port ${err.port ?? "?"} is already in use (another citymeter or service listens there): stop it, or pick ` +
        `other ports with HTTP_PORT=… (API, default ${BRIDGE_DEFAULTS.httpPort}) and EMBEDDED_MQTT_PORT=… (broker, default ${BRIDGE_DEFAULTS.embeddedMqttPort})`
      )
    case "EACCES":
      if (err.syscall === "listen")
        return `not allowed to listen on port ${err.port}: use a port above 1023 (HTTP_PORT=…)`
      return `permission denied: ${err.path ?? err.message}`
    case "ECONNREFUSED":
      return `nothing answers at ${where || err.message}: is the service running? (${err.message})`
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `host not found: ${(err as { hostname?: string }).hostname ?? err.message}`
    case "ENOENT":
      return `no such file or directory: ${err.path ?? err.message}`
  }
  return undefined
}

/** Prints the error as one line (and the stack under --verbose / DEBUG); returns the exit code. */
export function reportError(prefix: string, e: unknown): number {
  // the bridge's settings that cannot work: one line per variable, exit 2 (nothing was started)
  const problems = (e as { problems?: unknown })?.problems
  if ((e as Error)?.constructor?.name === "ServiceConfigError" && Array.isArray(problems)) {
    for (const p of problems) console.error(`${prefix}: error: ${String(p)}`)
    if (wantStack()) console.error((e as Error).stack)
    return 2
  }
  const line = userErrorLine(e)
  if (line !== undefined) {
    console.error(`${prefix}: error: ${line}`)
    if (wantStack() && !(e instanceof CliError)) console.error((e as Error).stack)
    return e instanceof CliError ? e.exitCode : 1
  }
  if (wantStack()) console.error(`${prefix}: error: ${(e as Error)?.stack ?? e}`)
  else
    console.error(
      `${prefix}: error: ${(e as Error)?.message ?? e} (run again with --verbose or DEBUG=1 for the stack trace)`,
    )
  return 1
}
