// A small element builder: text always goes in as text (never parsed as HTML).
type Child = Node | string | number | null | undefined | false
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v)
    else if (v === true) el.setAttribute(k, "")
    else el.setAttribute(k, String(v))
  }
  append(el, children)
  return el
}

export function append(el: Element, children: (Child | Child[])[]) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue
    el.append(typeof c === "object" ? c : String(c))
  }
}

const SVG = "http://www.w3.org/2000/svg"
export function svg(tag: string, attrs: Record<string, string | number> = {}, ...children: Node[]) {
  const el = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v))
  el.append(...children)
  return el
}

/** Announces a change to screen readers (the page's polite live region). */
export function announce(text: string) {
  const r = document.getElementById("announce")
  if (r) r.textContent = text
}

let seq = 0
export const uid = (p: string) => `${p}-${++seq}`

/** A labelled form control: the label is tied to the control by id. */
export function labelled(text: string, control: HTMLElement) {
  const id = control.id || uid("f")
  control.id = id
  return h("div", { class: "field" }, h("label", { for: id }, text), control)
}

export function when(iso: string | null | undefined) {
  if (!iso) return "—"
  const d = new Date(iso)
  return `${d.toISOString().slice(0, 10)} ${d.toISOString().slice(11, 19)} UTC`
}

export function ago(iso: string, now = Date.now()) {
  const s = Math.round((now - Date.parse(iso)) / 1000)
  if (s < 60) return `${Math.max(0, s)} s ago`
  if (s < 3600) return `${Math.round(s / 60)} min ago`
  if (s < 86400) return `${Math.round(s / 3600)} h ago`
  return `${Math.round(s / 86400)} d ago`
}
