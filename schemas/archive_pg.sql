-- flexmon archive (PostgreSQL): every result, partitioned by week of start_ns
-- (partitions results_wYYYYMMDD, Monday 00:00 UTC, created on demand by the
-- flush). Same tables and column names as the cache (schemas/cache.sql) and
-- the SQLite archive (schemas/archive_sqlite.sql); documented in
-- schemas/cache.md and schemas/researchers.md. Applied at every connection
-- that writes; every statement is idempotent. Schema version 1.

CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
INSERT INTO schema_version SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);

-- Text keys compare bytewise (COLLATE "C"): the same order as SQLite and the
-- readers' merge, and index inserts and lookups without locale collation.
CREATE TABLE IF NOT EXISTS results (
  id             bigint  NOT NULL,  -- the result's id in the cache it came from
  node           text    COLLATE "C" NOT NULL,
  boot_epoch     bigint  NOT NULL,
  seq            bigint  NOT NULL,
  stream         text    COLLATE "C" NOT NULL,
  tool           text    COLLATE "C" NOT NULL,
  src            text    COLLATE "C" NOT NULL,
  dst            text    COLLATE "C" NOT NULL,
  start_ns       bigint  NOT NULL,
  status         text    COLLATE "C" NOT NULL,
  error          text,
  sent           bigint,
  received       bigint,
  duplicates     bigint,
  rtt_min_ns     bigint,
  rtt_avg_ns     bigint,
  rtt_median_ns  bigint,
  rtt_max_ns     bigint,
  rtt_stddev_ns  bigint,
  rtts_ns        text,              -- JSON array; cast with rtts_ns::jsonb
  estimate_bps   double precision,
  lower_bps      double precision,
  upper_bps      double precision,
  bytes_sent     bigint,
  duration_ns    bigint,
  throughput_bps double precision,
  committed_ns   bigint  NOT NULL
) PARTITION BY RANGE (start_ns);

-- results_by_time stays a btree although it costs a third of the server's
-- COPY work (0.21 of 0.65 CPU s per 100,000 rows flushed): the flush sorts
-- each chunk by path, so every BRIN block range spans the chunk's whole hour,
-- and with BRIN instead a newest-first page without a path read whole hours
-- or days (10 M-row week, 101 rows: 116 ms -> 3.6 s; a day from `from`:
-- 0.4 ms -> 2.1 s; an hour's range: 10 ms -> 300 ms; a week's dump sorted
-- the whole partition before its first row). Measured 2026-11-30.
CREATE INDEX IF NOT EXISTS results_by_path ON results (src, dst, start_ns);
CREATE INDEX IF NOT EXISTS results_by_time ON results (start_ns);

-- The flush watermark, per cache: every result of that cache with an id <=
-- flushed_id is in `results`. Moved in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS flush_state (
  cache_uuid  text PRIMARY KEY,
  flushed_id  bigint NOT NULL,
  flushed_ns  bigint NOT NULL,
  rows        bigint NOT NULL
);

CREATE OR REPLACE VIEW latency AS
SELECT node, boot_epoch, seq, src, dst, start_ns,
       to_timestamp(start_ns / 1e9) AS start_time,
       status, error, sent, received, duplicates,
       CASE WHEN sent > 0 THEN (sent - received)::double precision / sent END AS loss,
       rtt_min_ns / 1e6 AS rtt_min_ms, rtt_avg_ns / 1e6 AS rtt_avg_ms,
       rtt_median_ns / 1e6 AS rtt_median_ms, rtt_max_ns / 1e6 AS rtt_max_ms,
       rtt_stddev_ns / 1e6 AS rtt_stddev_ms, rtts_ns
FROM results WHERE tool = 'latency';

CREATE OR REPLACE VIEW abw AS
SELECT node, boot_epoch, seq, src, dst, start_ns,
       to_timestamp(start_ns / 1e9) AS start_time,
       status, error, estimate_bps, lower_bps, upper_bps, bytes_sent,
       duration_ns / 1e6 AS duration_ms
FROM results WHERE tool = 'abw';

CREATE OR REPLACE VIEW throughput AS
SELECT node, boot_epoch, seq, src, dst, start_ns,
       to_timestamp(start_ns / 1e9) AS start_time,
       status, error, throughput_bps, bytes_sent, duration_ns / 1e6 AS duration_ms
FROM results WHERE tool = 'throughput';

CREATE OR REPLACE VIEW path_hourly AS
SELECT tool, src, dst,
       to_timestamp((start_ns / 3600000000000) * 3600) AS hour,
       (start_ns / 3600000000000) * 3600000000000 AS hour_ns,
       COUNT(*) AS results,
       COUNT(*) FILTER (WHERE status = 'ok') AS ok,
       SUM(sent) AS sent, SUM(received) AS received,
       CASE WHEN SUM(sent) > 0 THEN (SUM(sent) - SUM(received))::double precision / SUM(sent) END
         AS loss,
       MIN(rtt_min_ns) / 1e6 AS rtt_min_ms, AVG(rtt_avg_ns) / 1e6 AS rtt_avg_ms,
       MAX(rtt_max_ns) / 1e6 AS rtt_max_ms,
       AVG(COALESCE(estimate_bps, throughput_bps)) AS bandwidth_avg_bps
FROM results GROUP BY tool, src, dst, start_ns / 3600000000000;

-- Read-only role for researchers: GRANT flexmon_reader TO alice;
DO $$
BEGIN
  CREATE ROLE flexmon_reader NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA public TO flexmon_reader;
GRANT SELECT ON results, latency, abw, throughput, path_hourly TO flexmon_reader;
