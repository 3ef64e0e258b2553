// Ingest health as the HTTP API reports it (/readyz) and the metrics expose it.

export interface IngestHealth {
  /** Every ingest pipeline holds its uplink subscription. */
  subscribed: boolean
  /** Ingest has had a frame in hand for longer than the stall threshold, or the data tier is failing. */
  stalled: boolean
  /** Age of the oldest frame received and not yet acknowledged to the broker, seconds (0: none). */
  oldestUnackedS: number
  /** Why ingest is not ready, when it is not. */
  reason?: string
}
