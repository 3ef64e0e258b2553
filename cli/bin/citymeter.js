#!/usr/bin/env node
// `citymeter` / `npx citymeter`: runs the TypeScript CLI (cli/main.ts) through tsx, in this process.
import { register } from "tsx/esm/api"

register()
await import("../main.ts")
