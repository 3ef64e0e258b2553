// The city plan's projection, shared by the city plan (map.ts) and a district's map (dma.ts):
// equirectangular, scaled by cos(latitude) — true enough for one city — fitted to a W × H box.
// No online tiles: the bridge may have no internet, so a plan is drawn from coordinates alone.
import { svg } from "./dom.js"

export const W = 800
export const H = 560
export const PAD = 24

export interface Projection {
  x(lon: number): number
  y(lat: number): number
}

/** The projection that fits these [lon, lat] positions into the plan's box (at least one position). */
export function fit(positions: Iterable<readonly [number, number]>, w = W, h = H, pad = PAD): Projection {
  let [minLat, maxLat, minLon, maxLon] = [Infinity, -Infinity, Infinity, -Infinity]
  for (const [lon, lat] of positions)
    [minLat, maxLat, minLon, maxLon] = [
      Math.min(minLat, lat),
      Math.max(maxLat, lat),
      Math.min(minLon, lon),
      Math.max(maxLon, lon),
    ]
  const kx = Math.cos(((minLat + maxLat) / 2) * (Math.PI / 180))
  const spanX = Math.max((maxLon - minLon) * kx, 1e-6)
  const spanY = Math.max(maxLat - minLat, 1e-6)
  const scale = Math.min((w - 2 * pad) / spanX, (h - 2 * pad) / spanY)
  return {
    x: (lon: number) => pad + (lon - minLon) * kx * scale,
    y: (lat: number) => h - pad - (lat - minLat) * scale,
  }
}

/** The plan's background grid lines. */
export function grid(w = W, h = H): SVGElement[] {
  const lines: SVGElement[] = []
  for (let i = 0; i <= 8; i++) {
    lines.push(svg("line", { x1: (i * w) / 8, y1: 0, x2: (i * w) / 8, y2: h, class: "grid" }))
    lines.push(svg("line", { x1: 0, y1: (i * h) / 8, x2: w, y2: (i * h) / 8, class: "grid" }))
  }
  return lines
}
