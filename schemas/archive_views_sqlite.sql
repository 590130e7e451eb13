-- Views for researchers, in both SQLite files (cache and archive); the same
-- names and columns as in schemas/archive_pg.sql. Documented in
-- schemas/researchers.md. Times: start_ns (UTC ns) and start_time (ISO 8601,
-- UTC, millisecond precision in SQLite); RTTs in milliseconds.

CREATE VIEW IF NOT EXISTS latency AS
SELECT node, boot_epoch, seq, src, dst, start_ns,
       strftime('%Y-%m-%dT%H:%M:%fZ', start_ns / 1000000000.0, 'unixepoch') AS start_time,
       status, error, sent, received, duplicates,
       CASE WHEN sent > 0 THEN 1.0 * (sent - received) / sent END AS loss,
       rtt_min_ns / 1e6 AS rtt_min_ms, rtt_avg_ns / 1e6 AS rtt_avg_ms,
       rtt_median_ns / 1e6 AS rtt_median_ms, rtt_max_ns / 1e6 AS rtt_max_ms,
       rtt_stddev_ns / 1e6 AS rtt_stddev_ms, rtts_ns
FROM results WHERE tool = 'latency';

CREATE VIEW IF NOT EXISTS abw AS
SELECT node, boot_epoch, seq, src, dst, start_ns,
       strftime('%Y-%m-%dT%H:%M:%fZ', start_ns / 1000000000.0, 'unixepoch') AS start_time,
       status, error, estimate_bps, lower_bps, upper_bps, bytes_sent,
       duration_ns / 1e6 AS duration_ms
FROM results WHERE tool = 'abw';

CREATE VIEW IF NOT EXISTS throughput AS
SELECT node, boot_epoch, seq, src, dst, start_ns,
       strftime('%Y-%m-%dT%H:%M:%fZ', start_ns / 1000000000.0, 'unixepoch') AS start_time,
       status, error, throughput_bps, bytes_sent, duration_ns / 1e6 AS duration_ms
FROM results WHERE tool = 'throughput';

CREATE VIEW IF NOT EXISTS path_hourly AS
SELECT tool, src, dst,
       strftime('%Y-%m-%dT%H:00:00Z', (start_ns / 3600000000000) * 3600, 'unixepoch') AS hour,
       (start_ns / 3600000000000) * 3600000000000 AS hour_ns,
       COUNT(*) AS results,
       SUM(status = 'ok') AS ok,
       SUM(sent) AS sent, SUM(received) AS received,
       CASE WHEN SUM(sent) > 0 THEN 1.0 * (SUM(sent) - SUM(received)) / SUM(sent) END AS loss,
       MIN(rtt_min_ns) / 1e6 AS rtt_min_ms, AVG(rtt_avg_ns) / 1e6 AS rtt_avg_ms,
       MAX(rtt_max_ns) / 1e6 AS rtt_max_ms,
       AVG(COALESCE(estimate_bps, throughput_bps)) AS bandwidth_avg_bps
FROM results GROUP BY tool, src, dst, start_ns / 3600000000000;
