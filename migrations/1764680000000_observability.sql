-- Up Migration
-- Observability: metadata on every job (trace context, request ids, tenant
-- ids), a partial index so live-state gauges never read finished rows, and a
-- one-row-per-reading cache so the database-read gauges are computed at most
-- once per interval however many workers are scraped.
ALTER TABLE jobs ADD COLUMN meta jsonb NOT NULL DEFAULT '{}';
COMMENT ON COLUMN jobs.meta IS 'JSON object of metadata written at enqueue (the meta option and middleware): W3C trace context (traceparent, tracestate), request or tenant ids. Not validated by the task schema; handlers read it in ctx.job.meta.';

-- Blocked workflow jobs by queue: the only live state without a partial
-- index of its own, needed so a count of live jobs never scans finished ones.
CREATE INDEX jobs_blocked_idx ON jobs (queue) WHERE state = 'blocked';

CREATE UNLOGGED TABLE stats_cache (
  name        text        PRIMARY KEY,
  computed_at timestamptz NOT NULL,
  data        jsonb       NOT NULL
);
COMMENT ON TABLE stats_cache IS 'Readings of the database-read metrics (live jobs per queue and state, schedule lag), shared by every worker of the schema so a scrape of many workers computes them once per interval. Unlogged: lost on a crash and recomputed.';
COMMENT ON COLUMN stats_cache.name IS 'Which reading (queues).';
COMMENT ON COLUMN stats_cache.computed_at IS 'When the reading was computed; older than the metrics interval means stale.';
COMMENT ON COLUMN stats_cache.data IS 'The reading as JSON.';

-- Down Migration
DROP TABLE stats_cache;
DROP INDEX jobs_blocked_idx;
ALTER TABLE jobs DROP COLUMN meta;
