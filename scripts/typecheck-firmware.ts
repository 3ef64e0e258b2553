// `tsc -p firmware`, reporting the firmware's own files only. The firmware is strict, but the
// @devicescript packages it imports ship TypeScript sources (not declarations) written without
// strictNullChecks; one program checks every source file under one set of options, and
// skipLibCheck skips declaration files only. Their errors are the packages' own: `devs build`
// compiles them with DeviceScript's compiler.
import { dirname, join, relative, sep } from "node:path"
import ts from "typescript"
import { paths } from "../sim/src/paths.js"

const configFile = join(paths.root, "firmware", "tsconfig.json")
const read = ts.readConfigFile(configFile, (f) => ts.sys.readFile(f))
const config = ts.parseJsonConfigFileContent(read.config, ts.sys, dirname(configFile), undefined, configFile)
const program = ts.createProgram({ rootNames: config.fileNames, options: config.options })
const all = [...(read.error ? [read.error] : []), ...config.errors, ...ts.getPreEmitDiagnostics(program)]
const inPackage = (d: ts.Diagnostic) => !!d.file && d.file.fileName.split(/[\\/]/).includes("node_modules")
const own = all.filter((d) => !inPackage(d))

const host: ts.FormatDiagnosticsHost = {
  getCanonicalFileName: (f) => f,
  getCurrentDirectory: () => paths.root,
  getNewLine: () => "\n",
}
if (own.length) {
  const format = process.stdout.isTTY ? ts.formatDiagnosticsWithColorAndContext : ts.formatDiagnostics
  process.stdout.write(format(own, host))
  console.log(`firmware: ${own.length} error(s) in ${relative(paths.root, dirname(configFile)) + sep}`)
  process.exit(1)
}
