// The settings-store reader moved to the simulator, which reads the program record at power-on
// (sim/src/program.ts); tests keep importing it from here.
export * from "../sim/src/fstor.js"
