-- flexmon cache database (SQLite, WAL): recent results, written by the
-- collector, flushed to the archive, read by the query methods. Documented in
-- schemas/cache.md. Applied at every open; every statement is idempotent.
-- Schema version 1 (PRAGMA user_version); a later version migrates from it.

CREATE TABLE IF NOT EXISTS results (
  -- AUTOINCREMENT: ids are never reused, so "every id <= N" marks how far
  -- the cache is flushed to the archive.
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  node           TEXT    NOT NULL,  -- prober that measured and sent it
  boot_epoch     INTEGER NOT NULL,  -- the prober's boot epoch
  seq            INTEGER NOT NULL,  -- sequence number within the epoch
  stream         TEXT    NOT NULL,  -- stream key (tool, arguments, path)
  tool           TEXT    NOT NULL,  -- 'latency', 'abw', 'throughput'
  src            TEXT    NOT NULL,  -- source node id
  dst            TEXT    NOT NULL,  -- destination node id
  start_ns       INTEGER NOT NULL,  -- measurement start, UTC, ns since the epoch
  status         TEXT    NOT NULL,  -- ok, timeout, unreachable, resolve-failure, refused, error
  error          TEXT,              -- message when status is error
  sent           INTEGER,           -- latency: packets sent
  received       INTEGER,           -- latency: distinct replies received
  duplicates     INTEGER,           -- latency: extra copies of replies
  rtt_min_ns     INTEGER,           -- latency: over received packets; NULL if none
  rtt_avg_ns     INTEGER,
  rtt_median_ns  INTEGER,
  rtt_max_ns     INTEGER,
  rtt_stddev_ns  INTEGER,           -- population standard deviation
  rtts_ns        TEXT,              -- latency: JSON array per packet, null = lost
  estimate_bps   REAL,              -- abw: available bandwidth estimate, bit/s
  lower_bps      REAL,              -- abw: bounds of the estimate
  upper_bps      REAL,
  bytes_sent     INTEGER,           -- abw, throughput: probe traffic in bytes
  duration_ns    INTEGER,           -- abw, throughput: how long the probe ran
  throughput_bps REAL,              -- throughput: achieved TCP throughput, bit/s
  committed_ns   INTEGER NOT NULL,  -- when the collector committed it, UTC ns
  -- The key of a result: a datagram sent twice is stored once.
  UNIQUE (node, boot_epoch, seq)
);

CREATE INDEX IF NOT EXISTS results_by_path ON results (src, dst, start_ns);
CREATE INDEX IF NOT EXISTS results_by_time ON results (start_ns);
-- No index on committed_ns: ids grow in commit order, so the flush finds its
-- horizon by a binary search over id (storage/flusher.cpp), and the collector
-- saves that index's upkeep on every row (~7 % of its writer's work).
-- Version-1 files written before 2026-11-30 have one (results_by_commit);
-- the collector drops it when it opens the cache (Cache, storage/cache.cpp).

-- Facts about this cache file: 'uuid' (names it in the archive's flush
-- watermarks) and 'archived_id' (every id <= it is in the archive).
CREATE TABLE IF NOT EXISTS cache_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
