// Vitest copies Vite's import.meta.env into process.env, MODE=test among it, and every bridge a
// test starts as a child process would inherit it: the bridge reads MODE (all | api | ingest,
// bridge/src/roles.ts) and refuses "test". Tests that want a MODE set it themselves.
delete process.env.MODE

// The CLI's bin runs the compiled dist/ when a build made one (cli/bin/citymeter.js); the tests run
// the sources as they are, so an edit is tested without a build. tests/system/compiled.test.ts
// unsets this to run the compiled CLI.
process.env.CITYMETER_FROM_SOURCE = "1"
