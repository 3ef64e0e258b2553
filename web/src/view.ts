// What main.ts routes between: each view module (fleet, meter, map, dmas, dma, alarms, ops) makes one.
import type { LiveMsg } from "./live.js"

export interface View {
  title: string
  render(main: HTMLElement): Promise<void> | void
  onLive?(msgs: LiveMsg[]): void
  destroy?(): void
}
