// Vitest copies Vite's import.meta.env into process.env, MODE=test among it, and every bridge a
// test starts as a child process would inherit it: the bridge reads MODE (all | api | ingest,
// bridge/src/roles.ts) and refuses "test". Tests that want a MODE set it themselves.
delete process.env.MODE
