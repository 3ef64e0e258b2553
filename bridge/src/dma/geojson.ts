// A DMA's boundary as the city plan draws it: a GeoJSON Polygon or MultiPolygon geometry (RFC 7946
// §3.1.6-7) in WGS 84 [longitude, latitude] positions, checked before it is stored: each linear
// ring closed and of at least four positions, each position in range, and at most
// MAX_BOUNDARY_POSITIONS positions in all (a district's outline, not a survey).
import type { DmaBoundary } from "../store/dmas.js"

export const MAX_BOUNDARY_POSITIONS = 10_000

const isPosition = (p: unknown): p is number[] =>
  Array.isArray(p) &&
  (p.length === 2 || p.length === 3) &&
  p.every((x) => typeof x === "number" && Number.isFinite(x)) &&
  Math.abs(p[0] as number) <= 180 &&
  Math.abs(p[1] as number) <= 90

/** What is wrong with `g` as a boundary (the first fault found), or undefined when it is one. */
export function boundaryError(g: unknown): string | undefined {
  if (g === null || typeof g !== "object" || Array.isArray(g)) return "a boundary is a GeoJSON geometry object"
  const o = g as Record<string, unknown>
  const extra = Object.keys(o).filter((k) => k !== "type" && k !== "coordinates" && k !== "bbox")
  if (extra.length) return `a boundary has only type and coordinates (got ${extra[0]})`
  if (o.type !== "Polygon" && o.type !== "MultiPolygon")
    return `a boundary is a Polygon or a MultiPolygon (got ${String(o.type)})`
  if (!Array.isArray(o.coordinates) || !o.coordinates.length) return "coordinates must be a non-empty array"
  const polygons = (o.type === "Polygon" ? [o.coordinates] : o.coordinates) as unknown[]
  let positions = 0
  for (const [i, poly] of polygons.entries()) {
    if (!Array.isArray(poly) || !poly.length) return `polygon ${i} must be a non-empty array of linear rings`
    for (const [j, ring] of poly.entries()) {
      const where = `polygon ${i}, ring ${j}`
      if (!Array.isArray(ring) || ring.length < 4) return `${where}: a linear ring has at least 4 positions`
      positions += ring.length
      if (positions > MAX_BOUNDARY_POSITIONS) return `a boundary has at most ${MAX_BOUNDARY_POSITIONS} positions`
      const bad = ring.findIndex((p) => !isPosition(p))
      if (bad >= 0) return `${where}, position ${bad}: [longitude, latitude] in degrees, within ±180 and ±90`
      const [a, z] = [ring[0] as number[], ring[ring.length - 1] as number[]]
      if (a[0] !== z[0] || a[1] !== z[1]) return `${where}: a linear ring ends where it starts`
    }
  }
  return undefined
}

/** The boundary as stored: a checked geometry (call boundaryError first). */
export const asBoundary = (g: unknown) => g as DmaBoundary
