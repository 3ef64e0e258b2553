// citymeter: the field CLI. `npx citymeter --help`; each command has --help.
// Exit codes: 0 ok, 1 the operation failed, 2 bad input or usage.
import { Command, InvalidArgumentError, Option } from "commander"
import { BRIDGE_DEFAULTS } from "../bridge/src/defaults.js"
import { METER_ID_RULE, isMeterId } from "../bridge/src/topics.js"
import { TUNABLE_BY_NAME } from "../bridge/src/tunables/schema.js"
import { VERSION } from "../bridge/src/version.js"
import { DEMO_FLEET } from "../sim/src/demo.js"
import { BROKER_HELP, resolveBroker } from "./broker.js"
import { CliError, reportError, usage } from "./errors.js"
import { decodeCommand } from "./decode.js"
import { build } from "./build.js"
import { registerBackup } from "./backup.js"
import { registerCompact } from "./compact.js"
import { registerDma } from "./dma.js"
import { deploy, flash } from "./flash.js"
import {
  bridgeTarget,
  locationOption,
  provision,
  putLocation,
  readSealKey,
  registerMeter,
  usernameWarning,
} from "./provision.js"
import { keygen, release } from "./release.js"
import { rolloutCommand } from "./rollout.js"
import { bridge, sim } from "./run.js"
import { CONNSTR_FILE, maskedConnstr, putLinkKey, readLinkKey, writeLink, wsskBase } from "./wssk.js"
import { watch } from "./watch.js"

const print = (line: string) => console.log(line)
/** Where a command's broker came from, on stderr (stdout stays the command's output). */
async function broker(given: string | undefined): Promise<string> {
  const { url, note } = await resolveBroker(given)
  if (note) console.error(`citymeter: ${note}`)
  return url
}

function intArg(name: string) {
  return (v: string) => {
    const n = Number(v)
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n))
      throw new InvalidArgumentError(`${name} must be an integer`)
    return n
  }
}

const program = new Command()
  .name("citymeter")
  .description(
    "Field tool for citymeter meters: provision, build, flash, watch and decode frames, run the simulator and the bridge.",
  )
  .version(VERSION, "-V, --version", "print the citymeter version")
  .option("--verbose", "print stack traces with errors (so does DEBUG=1 in the environment)")
  .showHelpAfterError("(run with --help for usage)")
  .configureOutput({ outputError: (s, write) => write(s.startsWith("error:") ? `citymeter: ${s}` : s) })
  .exitOverride((e) => {
    // commander's own errors (unknown option, missing argument) are usage errors
    process.exit(e.exitCode === 0 ? 0 : 2)
  })

const { intervalS: INTERVAL, batch: BATCH } = TUNABLE_BY_NAME
/** Options several commands take, each defined once (a fresh Option per command). */
const shared = {
  username: (help = "MQTT username") => new Option("--username <user>", help),
  password: (help = "MQTT password (or set MQTT_PASS)") => new Option("--password <pass>", help),
  interval: () =>
    new Option("-i, --interval <s>", `seconds per interval, ${INTERVAL.min}..${INTERVAL.max}`)
      .argParser(intArg("--interval"))
      .default(INTERVAL.default),
  batch: (byDefault: number = BATCH.default) =>
    new Option("--batch <n>", `intervals per frame, ${BATCH.min}..${BATCH.max}`)
      .argParser(intArg("--batch"))
      .default(byDefault),
  image: () =>
    new Option(
      "--file <image>",
      "runtime image (.bin for ESP32, .uf2 for RP2040) instead of downloading it; Pico W boards default to the committed vendor/rp2040-runtime image",
    ),
}

/** What provision and deploy hand to provision() from their shared options. */
const provisionInput = (o: Record<string, string | number | string[] | boolean | undefined>, board: string) => ({
  meterId: o.meter as string,
  board,
  broker: o.broker as string,
  username: o.username as string | undefined,
  password: (o.password ?? process.env.MQTT_PASS) as string | undefined,
  intervalS: o.interval as number,
  batch: o.batch as number,
  set: o.set as string[] | undefined,
  open: o.open as boolean | undefined,
  pressureCal: o.pressureCal as string | undefined,
  adeCal: o.adeCal as string | undefined,
  adeRetryS: o.adeRetry === undefined ? undefined : Number(o.adeRetry),
})

program
  .command("provision")
  .description(
    "write a meter's DeviceScript settings: .env.defaults (identity, broker, interval) and .env.local (secrets)",
  )
  .requiredOption("-m, --meter <id>", `meter id: ${METER_ID_RULE}`)
  .requiredOption("-b, --board <board>", "board id: a DeviceScript board, boards/<id>.board.json, or 'sim'")
  .requiredOption("-u, --broker <url>", "broker URL, mqtt://host:port or mqtts://host:port (TLS)")
  .addOption(shared.username("MQTT username (the shipped broker ACL needs it to be the meter id)"))
  .addOption(shared.password("MQTT password (or set MQTT_PASS); written to .env.local only"))
  .option("--bridge <url>", "then register the meter with this bridge's HTTP API, http(s)://host:port")
  .option("--token <token>", "the bridge's API token (or set CITYMETER_API_TOKEN, which keeps it out of ps)")
  .addOption(shared.interval())
  .addOption(shared.batch())
  .option("--set <KEY=VALUE...>", "tunables of proto/tunables.json (README table), e.g. LEAK_S=3600 PULSES_PER_L=1")
  .option("-o, --out <dir>", "directory for the two files (default: data/provision/<meter>)")
  .option("--open", "no sealing key: a legacy or demo meter whose frames travel unsealed")
  .option(
    "--pressure-cal <PA:MV,PA:MV>",
    'the pressure transducer\'s two-point calibration (P_CAL): two reference pressures in Pa and the mV the meter logged ("pressure input … mV") at each',
  )
  .option(
    "--ade-cal <list>",
    "the ADE7953's calibration (ADE_CAL): vGainPpm,vOffset,iGainPpm,iOffset,pGainPpm,pOffset (gains in ppm, offsets in register counts)",
  )
  .option(
    "--ade-retry <s>",
    "seconds between probes for an ADE7953 that did not answer at boot (ADE_RETRY_S, default 30)",
  )
  .option("-f, --force", "overwrite existing files")
  .option("--lat <deg>", "where the meter is: latitude, WGS 84 decimal degrees (with --bridge)")
  .option("--lon <deg>", "longitude, WGS 84 decimal degrees (with --bridge)")
  .option("--address <text>", "street address, shown on the dashboard (with --lat/--lon)")
  .option("--district <name>", "the utility's district; the dashboard groups alarms and consumption by it")
  .option(
    "--wssk-url <url>",
    "the bridge's WSSK endpoint as the meter reaches it, ws://host:port or wss://host[:port]: a new link key for updates over the air, its connection string in <out>/wssk-connstr (mode 600), registered with --bridge",
  )
  .addHelpText(
    "after",
    "\nExample:\n  citymeter provision -m hall-7.w1 -b esp32c3_bare -u mqtts://broker.city.example:8883 --username hall-7.w1 --password s3cret\n" +
      "  citymeter build -b esp32c3_bare --settings data/provision/hall-7.w1\n" +
      "  CITYMETER_API_TOKEN=… citymeter provision -m hall-7.w1 -b esp32c3_bare -u mqtts://broker.city.example:8883 --bridge https://bridge.city.example",
  )
  .action(async (o) => {
    const out = o.out ?? `data/provision/${o.meter}`
    const bridge = o.bridge ? bridgeTarget(o.bridge, o.token ?? process.env.CITYMETER_API_TOKEN) : undefined
    const location = locationOption(o)
    if (location && !bridge) throw usage("--lat/--lon set the meter's location in the bridge's registry: add --bridge")
    const wsskUrl = o.wsskUrl === undefined ? undefined : wsskBase(o.wsskUrl)
    const r = provision(provisionInput(o, o.board), out, o.force)
    const link = wsskUrl ? writeLink(out, wsskUrl, o.meter, o.force) : undefined
    const warning = usernameWarning({ meterId: o.meter, username: o.username })
    if (warning) console.error(`citymeter: warning: ${warning}`)
    print(`wrote ${r.defaultsFile}`)
    for (const [k, v] of Object.entries(r.defaults)) print(`  ${k}=${JSON.stringify(v)}`)
    print(`wrote ${r.localFile} (mode 600)`)
    for (const k of Object.keys(r.secrets)) print(`  ${k}=********`)
    if (link) print(`wrote ${link.file} (mode 600): ${maskedConnstr(link.conn)} (the meter's wssk_connstr)`)
    const key = r.secrets.SEAL_KEY as string | undefined
    if (bridge) {
      const { created } = await registerMeter(bridge, o.meter, key)
      print(
        `${created ? "registered" : "already registered, key replaced:"} meter ${o.meter} (${key ? "sealed" : "open"}) with the bridge at ${bridge.url.href}`,
      )
      if (link) {
        await putLinkKey(bridge, o.meter, link.key)
        print(`registered meter ${o.meter}'s WSSK link key with the bridge`)
      }
      if (location) {
        await putLocation(bridge, o.meter, location)
        print(
          `located meter ${o.meter} at ${location.lat}, ${location.lon}${location.district ? ` (${location.district})` : ""}`,
        )
      }
    } else if (key || link)
      print(
        `the bridge needs the key${key && link ? "s" : ""}: citymeter register -m ${o.meter} --settings ${out} --bridge <url>`,
      )
    print(
      `next: citymeter deploy --board ${o.board} --settings ${out} --file <runtime image>` +
        ` (builds firmware/targets/${o.board}.ts with these settings and programs the board)`,
    )
  })

program
  .command("register")
  .description("import a provisioned meter and its sealing key into the bridge's registry (PUT /meters/:id)")
  .requiredOption("-m, --meter <id>", `meter id: ${METER_ID_RULE}`)
  .requiredOption("--settings <dir>", "the meter's provision folder (its .env.local holds SEAL_KEY)")
  .requiredOption("--bridge <url>", "the bridge's HTTP API, http(s)://host:port")
  .option("--token <token>", "the bridge's API token (or set CITYMETER_API_TOKEN)")
  .action(async (o) => {
    if (!isMeterId(o.meter)) throw usage(`meter id '${o.meter}' must be ${METER_ID_RULE}`)
    const bridge = bridgeTarget(o.bridge, o.token ?? process.env.CITYMETER_API_TOKEN)
    const key = readSealKey(o.settings)
    const linkKey = readLinkKey(o.settings)
    const { created } = await registerMeter(bridge, o.meter, key)
    print(`${created ? "registered" : "updated"} meter ${o.meter} (${key ? "sealed" : "open"}) at ${bridge.url.href}`)
    if (linkKey) {
      await putLinkKey(bridge, o.meter, linkKey)
      print(`registered meter ${o.meter}'s WSSK link key (${CONNSTR_FILE})`)
    }
  })

program
  .command("build")
  .description("compile the firmware (devs build) for a board, with the repository's or a provisioned meter's settings")
  .requiredOption("-b, --board <board>", "board id")
  .option("-s, --settings <dir>", "directory written by `citymeter provision`")
  .option("-o, --out <dir>", "output directory (default: .devicescript/boards/<board>)")
  .action(async (o) => {
    await build({ board: o.board, settings: o.settings, out: o.out }, print)
  })

const releaseCmd = program
  .command("release")
  .description("sign a board's build with the release key and register it with the bridge (POST /releases)")
  .option("-b, --board <board>", "board id: one of boards/*.board.json")
  .option("--key <file>", "the release private key, PEM (citymeter release keygen)")
  .option("--bytecode <file>", "the program (default: the board's build, .devicescript/boards/<board>/bytecode.devs)")
  .option("--bridge <url>", "the bridge's HTTP API, http(s)://host:port")
  .option("--token <token>", "the bridge's ops token (or set CITYMETER_API_TOKEN)")
  .action(async (o) => {
    for (const [flag, v] of [
      ["--board", o.board],
      ["--key", o.key],
      ["--bridge", o.bridge],
    ])
      if (!v) throw usage(`release needs ${flag} (citymeter release --help)`)
    const target = bridgeTarget(o.bridge, o.token ?? process.env.CITYMETER_API_TOKEN)
    await release({ board: o.board, keyFile: o.key, bytecode: o.bytecode }, target, print)
  })
releaseCmd
  .command("keygen")
  .description("make the utility's Ed25519 release key pair: release-private.pem (0600) and release-public.pem")
  .requiredOption("-o, --out <dir>", "directory for the two files (an existing key is never overwritten)")
  .action((o) => {
    keygen(o.out, print)
  })

program
  .command("flash")
  .description(
    "flash the DeviceScript runtime onto a board (wraps `devs flash`); offline, pass the image with --file (Pico W boards: the committed image)",
  )
  .requiredOption("-b, --board <board>", "board id")
  .addOption(shared.image())
  .option("--port <path>", "serial port (ESP32 boards only; RP2040 boards are a USB drive)")
  .option("--program <dir>", "a build folder (citymeter build): flash runtime + that bytecode + its settings")
  .option("--once", "do not wait for the board to be connected")
  .action(async (o) => {
    await flash({ board: o.board, file: o.file, port: o.port, once: o.once, program: o.program }, print)
  })

program
  .command("deploy")
  .description("provision (unless --settings), build the board's firmware and program it onto the board, in one go")
  .requiredOption("-b, --board <board>", "board id (one with a firmware/targets/<board>.ts)")
  .option("-s, --settings <dir>", "an already provisioned meter's folder (skips provisioning)")
  .option("-m, --meter <id>", `meter id to provision: ${METER_ID_RULE}`)
  .option("-u, --broker <url>", "broker URL to provision, mqtt://host:port or mqtts://host:port")
  .addOption(shared.username())
  .addOption(shared.password())
  .addOption(shared.interval())
  .addOption(shared.batch())
  .option("--set <KEY=VALUE...>", "alarm thresholds and pulse constants")
  .option("--open", "no sealing key")
  .addOption(shared.image())
  .option("--port <path>", "serial port (ESP32 boards only)")
  .action(async (o) => {
    let settings = o.settings as string | undefined
    if (!settings) {
      if (!o.meter || !o.broker) throw usage("deploy needs --settings <dir>, or --meter and --broker to provision")
      settings = `data/provision/${o.meter}`
      const r = provision(provisionInput(o, o.board), settings, false)
      print(`[provision] wrote ${r.defaultsFile} and ${r.localFile}`)
    }
    await deploy({ board: o.board, settings, file: o.file, port: o.port }, print)
  })

program
  .command("watch")
  .description("print a meter's live frames (citymeter/v1/<meter>/#), decoded; '+' watches every meter")
  .argument("<meter>", "meter id, or + for all")
  .option("-u, --broker <url>", BROKER_HELP)
  .addOption(shared.username())
  .addOption(shared.password())
  .option("-n, --count <n>", "exit after n frames", intArg("--count"))
  .option("-t, --timeout <s>", "exit with an error when no frame arrives for s seconds", intArg("--timeout"))
  .option("--hex", "also print each payload in hex (for `citymeter decode`)")
  .action(async (meter, o) => {
    await watch(
      meter,
      {
        url: await broker(o.broker),
        username: o.username,
        password: o.password ?? process.env.MQTT_PASS,
        count: o.count,
        timeout: o.timeout,
        hex: o.hex,
      },
      print,
    )
  })

program
  .command("decode")
  .description("explain a captured frame field by field: field numbers, wire types, values with units")
  .argument("<hex|file>", "hex bytes, or a file holding hex text (proto/golden/*.hex) or raw bytes")
  .option("--downlink", "decode a citymeter.v1.Downlink (default: Uplink)")
  .addOption(
    new Option("--kind <kind>", "uplink topic kind to validate against (default: the frame's body)").choices([
      "readings",
      "birth",
      "alarm",
      "death",
    ]),
  )
  .action((input, o) => {
    print(decodeCommand(input, { downlink: o.downlink, kind: o.kind }))
  })

program
  .command("sim")
  .description("run simulated meters (the real firmware in DeviceScript VMs) against a broker")
  .option("-u, --broker <url>", BROKER_HELP)
  .option("-n, --meters <n>", "number of meters", intArg("--meters"), DEMO_FLEET.meters)
  .option("--prefix <prefix>", "meter ids are <prefix>-001, <prefix>-002, …", "sim")
  .option("-i, --interval <s>", "seconds per interval", intArg("--interval"), DEMO_FLEET.intervalS)
  .addOption(shared.batch(DEMO_FLEET.batch))
  .addOption(shared.username())
  .addOption(shared.password())
  .option("-d, --duration <s>", "stop after s seconds (0: run until Ctrl-C)", intArg("--duration"), 0)
  .option("-v, --verbose", "print every firmware console line")
  .option("-w, --workers <n>", "worker threads the meters are spread over (default: one per core)", intArg("--workers"))
  .option(
    "--scenario <name>",
    "run one scenario of sim/scenarios/ (leak, burst, household-day, …) against a private bridge and print its verdict; exit 1 when it fails",
  )
  .action(async (o) => {
    if (o.scenario !== undefined) {
      // loaded only here: the scenario runner brings the VM and the whole bridge
      const { scenarioCommand } = await import("./scenario.js")
      if (!(await scenarioCommand(o.scenario, print, o.verbose || program.opts().verbose)))
        throw new CliError(`scenario ${o.scenario} failed (the lines marked FAIL above)`)
      return
    }
    await sim(
      {
        broker: await broker(o.broker),
        meters: o.meters,
        prefix: o.prefix,
        interval: o.interval,
        batch: o.batch,
        username: o.username,
        password: o.password ?? process.env.MQTT_PASS,
        duration: o.duration,
        verbose: o.verbose || program.opts().verbose,
        workers: o.workers,
      },
      print,
    )
  })

program
  .command("bridge")
  .description("run the bridge service (ingest + HTTP API); flags override the environment (README: Configuration)")
  .option("--mqtt-url <url>", "external broker (default: $MQTT_URL, else an embedded broker)")
  .option(
    "--database-url <url>",
    `postgres://… or pglite:<dir> / pglite:memory (default: $DATABASE_URL or ${BRIDGE_DEFAULTS.databaseUrl})`,
  )
  .option("--http-port <port>", `API port (default: $HTTP_PORT or ${BRIDGE_DEFAULTS.httpPort})`, intArg("--http-port"))
  .option("--http-host <host>", `API host (default: $HTTP_HOST or ${BRIDGE_DEFAULTS.httpHost})`)
  .option("--client-id <id>", "stable MQTT client id (keeps the bridge's session at the broker)")
  .option("--share-group <name>", "MQTT 5 shared subscription group (scale-out)")
  .option(
    "--demo",
    "demo mode: meters register with their first frame and the embedded broker takes anonymous clients (default: $CITYMETER_MODE, else production)",
  )
  .action((o) => bridge(o, print))
for (const register of [registerBackup, registerCompact, registerDma, rolloutCommand]) register(program, print)

// commander checks required options before unknown ones, so `build --bord x` would report a
// missing --board; required options are checked after parsing instead (same message).
for (const cmd of program.commands) {
  const required = cmd.options.filter((opt) => opt.mandatory)
  for (const opt of required) opt.mandatory = false
  cmd.hook("preAction", (c) => {
    for (const opt of required)
      if (c.getOptionValue(opt.attributeName()) === undefined)
        c.error(`error: required option '${opt.flags}' not specified`)
  })
}

try {
  await program.parseAsync()
} catch (e) {
  process.exit(reportError("citymeter", e))
}
