-- flexmon archive without a server (SQLite): used when no PostgreSQL is
-- configured. Same tables and columns as schemas/archive_pg.sql and the
-- cache's results table; documented in schemas/cache.md. Schema version 1
-- (PRAGMA user_version). Applied at every open; every statement is idempotent.

CREATE TABLE IF NOT EXISTS results (
  id             INTEGER NOT NULL,  -- the result's id in the cache it came from
  node           TEXT    NOT NULL,
  boot_epoch     INTEGER NOT NULL,
  seq            INTEGER NOT NULL,
  stream         TEXT    NOT NULL,
  tool           TEXT    NOT NULL,
  src            TEXT    NOT NULL,
  dst            TEXT    NOT NULL,
  start_ns       INTEGER NOT NULL,
  status         TEXT    NOT NULL,
  error          TEXT,
  sent           INTEGER,
  received       INTEGER,
  duplicates     INTEGER,
  rtt_min_ns     INTEGER,
  rtt_avg_ns     INTEGER,
  rtt_median_ns  INTEGER,
  rtt_max_ns     INTEGER,
  rtt_stddev_ns  INTEGER,
  rtts_ns        TEXT,
  estimate_bps   REAL,
  lower_bps      REAL,
  upper_bps      REAL,
  bytes_sent     INTEGER,
  duration_ns    INTEGER,
  throughput_bps REAL,
  committed_ns   INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS results_by_path ON results (src, dst, start_ns);
CREATE INDEX IF NOT EXISTS results_by_time ON results (start_ns);

-- The flush watermark, per cache: every result of that cache with an id <=
-- flushed_id is in `results`. Moved in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS flush_state (
  cache_uuid  TEXT PRIMARY KEY,
  flushed_id  INTEGER NOT NULL,
  flushed_ns  INTEGER NOT NULL,  -- UTC ns of the last flush that moved it
  rows        INTEGER NOT NULL   -- rows archived from this cache, in total
);
