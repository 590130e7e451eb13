"""The query.* methods end to end: real manager, collector and three probers on
loopback; results measured, then part of them flushed to the (SQLite) archive
by `flexmon-admin flush` while more arrive, then read back with Python's
standard-library xmlrpc.client: every method, every filter, cursor paging
over the cache and the archive as one table, and every documented fault."""

import subprocess
import time
import unittest
import xmlrpc.client

from flexmon_harness import FaultAssertions, Flexmon, binary, wait_alive, wait_for

BAD_ARGUMENT = 4001
UNKNOWN_NODE = 4002
NOT_AUTHENTICATED = 4010

QUERY_METHODS = ["query.latency", "query.abw", "query.throughput", "query.summary",
                 "query.paths"]
PATHS = {(s, d) for s in ("n1", "n2", "n3") for d in ("n1", "n2", "n3") if s != d}


class ArchivingLab(Flexmon):
    """Every committed result may be flushed at once; flushed rows leave the cache."""

    def config_text(self):
        return super().config_text() + (
            "archive:\n  horizon_s: 0\n  retention_s: 0\n  flush_interval_s: 86400\n")


def key(row):
    return (row["node"], row["boot_epoch"], row["seq"])


class Queries(FaultAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = ArchivingLab(nodes=3)
        try:
            cls.lab.start_all()
            cls.measure()
        except Exception:
            cls.lab.close()
            raise

    @classmethod
    def measure(cls):
        admin = cls.lab.proxy()
        wait_alive(admin, 3)
        request = admin.probe.request({
            "tool": "latency", "nodes": ["n1", "n2", "n3"], "interval": 1,
            "args": {"method": "udp", "count": 3, "spacing_ms": 10, "timeout_ms": 500}})

        def per_path(minimum):
            counts = {(p["src"], p["dst"]): p["count"] for p in admin.query.paths({})}
            return set(counts) == PATHS and min(counts.values()) >= minimum

        wait_for(lambda: per_path(2), 30, "two results on each path")
        flush = subprocess.run([binary("flexmon-admin"), "flush", "--config", cls.lab.config],
                               capture_output=True, text=True, timeout=60)
        if flush.returncode != 0:
            raise AssertionError(f"flexmon-admin flush: {flush.stdout} {flush.stderr}")
        cls.archived_at = time.time()
        wait_for(lambda: per_path(4), 30, "more results after the flush")
        admin.probe.cancel(request["id"])

        def settled():  # the last results of the cancelled request have arrived
            first = sum(p["count"] for p in admin.query.paths({}))
            time.sleep(1.5)
            return first == sum(p["count"] for p in admin.query.paths({}))

        wait_for(settled, 30, "no more results after the cancel")
        cls.total = sum(p["count"] for p in admin.query.paths({}))

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()

    def setUp(self):
        self.admin = self.lab.proxy()
        self.bob = self.lab.proxy("bob")

    def every_row(self, api, page_size, **filters):
        rows, cursor, pages = [], "", 0
        while True:
            page = api.query.latency(dict(filters, limit=page_size,
                                          **({"cursor": cursor} if cursor else {})))
            rows += page["rows"]
            pages += 1
            cursor = page["next_cursor"]
            if not cursor:
                return rows, pages
            self.assertLessEqual(pages, self.total, "paging does not end")

    def test_methods_are_listed_and_documented(self):
        listed = self.admin.system.listMethods()
        for method in QUERY_METHODS:
            self.assertIn(method, listed)
            help_text = self.admin.system.methodHelp(method)
            self.assertIn("schemas/xmlrpc-api.md", help_text)
            self.assertIn("5030", help_text)
        self.assertIn("cursor", self.admin.system.methodHelp("query.latency"))
        self.assertIn("rtt_p99_ms", self.admin.system.methodHelp("query.summary"))

    def test_pages_cover_cache_and_archive_once(self):
        rows, pages = self.every_row(self.bob, 7)
        self.assertEqual(len(rows), self.total)
        self.assertEqual(len({key(r) for r in rows}), self.total)
        self.assertGreater(pages, 1)
        times = [r["time"] for r in rows]
        self.assertEqual(times, sorted(times, reverse=True))
        # Some rows were measured before the flush (archived), some after.
        self.assertTrue(any(r["time"] < self.archived_at for r in rows))
        self.assertTrue(any(r["time"] > self.archived_at for r in rows))
        for r in rows:
            self.assertEqual(r["tool"], "latency")
            self.assertIn((r["src"], r["dst"]), PATHS)
            self.assertAlmostEqual(r["start_ns"] / 1e9, r["time"], delta=1e-6)
            self.assertEqual(r["sent"], 3)
            self.assertEqual(len(r["rtts_ms"]), 3)
            if r["status"] == "ok" and r["received"] > 0:
                self.assertLessEqual(r["rtt_min_ms"], r["rtt_max_ms"])
        one_page = self.admin.query.latency({"limit": 10000})
        self.assertEqual(one_page["next_cursor"], "")
        self.assertEqual([key(r) for r in one_page["rows"]], [key(r) for r in rows])

    def test_filters(self):
        everything = self.admin.query.latency({"limit": 10000})["rows"]
        one_path = self.admin.query.latency({"src": "n2", "dst": "n3", "limit": 10000})["rows"]
        self.assertEqual(one_path, [r for r in everything if (r["src"], r["dst"]) == ("n2", "n3")])
        lab_site = self.admin.query.latency({"site": "lab", "limit": 10000})["rows"]
        self.assertEqual(len(lab_site), self.total)
        ok = self.admin.query.latency({"status": "ok", "limit": 10000})["rows"]
        self.assertEqual(ok, [r for r in everything if r["status"] == "ok"])
        middle = everything[len(everything) // 2]["time"]
        newer = self.admin.query.latency({"from": middle, "limit": 10000})["rows"]
        older = self.admin.query.latency({"to": middle, "limit": 10000})["rows"]
        self.assertEqual(len(newer) + len(older), self.total)
        self.assertTrue(all(r["time"] >= middle for r in newer))
        latest = self.admin.query.latency({"latest": True})
        self.assertEqual({(r["src"], r["dst"]) for r in latest["rows"]}, PATHS)
        self.assertEqual(len(latest["rows"]), 6)
        self.assertEqual(latest["next_cursor"], "")
        newest = {}
        for r in everything:
            newest.setdefault((r["src"], r["dst"]), key(r))
        self.assertEqual({(r["src"], r["dst"]): key(r) for r in latest["rows"]}, newest)
        self.assertEqual(self.admin.query.abw({}), {"rows": [], "next_cursor": ""})
        self.assertEqual(self.admin.query.throughput({"src": "n1"})["rows"], [])

    def test_summary_and_paths(self):
        paths = self.bob.query.paths({})
        self.assertEqual({(p["src"], p["dst"]) for p in paths}, PATHS)
        self.assertEqual(sum(p["count"] for p in paths), self.total)
        self.assertEqual([p["src"] + p["dst"] for p in paths],
                         sorted(p["src"] + p["dst"] for p in paths))
        summaries = self.bob.query.summary({"tool": "latency"})
        self.assertEqual(len(summaries), 6)
        for s in summaries:
            self.assertEqual(s["tool"], "latency")
            self.assertEqual(s["sent"], 3 * s["count"])
            self.assertGreaterEqual(s["loss"], 0)
            self.assertLessEqual(s["loss"], 1)
            if s["received"]:
                self.assertLessEqual(s["rtt_min_ms"], s["rtt_p50_ms"] * 1.005)
                self.assertLessEqual(s["rtt_p50_ms"], s["rtt_p90_ms"])
                self.assertLessEqual(s["rtt_p90_ms"], s["rtt_p99_ms"])
            self.assertLessEqual(s["first"], s["last"])
        n1 = self.bob.query.summary({"src": "n1", "from": 0, "to": 4e9})
        self.assertEqual(len(n1), 2)
        self.assertEqual(self.bob.query.summary({"tool": "abw"}), [])

    def test_faults(self):
        q = self.admin.query
        self.assertIn("limit", self.assertFault(BAD_ARGUMENT, q.latency, {"limit": 0}))
        self.assertIn("10000", self.assertFault(BAD_ARGUMENT, q.abw, {"limit": 10001}))
        self.assertIn("limit", self.assertFault(BAD_ARGUMENT, q.throughput, {"limit": "5"}))
        self.assertIn("cursor", self.assertFault(BAD_ARGUMENT, q.latency, {"cursor": "nope"}))
        self.assertIn("cursor", self.assertFault(BAD_ARGUMENT, q.latency,
                                                 {"cursor": "313a32", "latest": True}))
        self.assertIn("filter.colour", self.assertFault(BAD_ARGUMENT, q.paths, {"colour": 1}))
        self.assertIn("filter.limit", self.assertFault(BAD_ARGUMENT, q.summary, {"limit": 5}))
        self.assertIn("status", self.assertFault(BAD_ARGUMENT, q.latency, {"status": "fine"}))
        self.assertIn("site", self.assertFault(BAD_ARGUMENT, q.summary, {"site": "mars"}))
        self.assertIn("tool", self.assertFault(BAD_ARGUMENT, q.paths, {"tool": "ping"}))
        self.assertIn("from", self.assertFault(BAD_ARGUMENT, q.latency, {"from": 10, "to": 10}))
        self.assertIn("from", self.assertFault(BAD_ARGUMENT, q.latency, {"from": "today"}))
        self.assertIn("filter", self.assertFault(BAD_ARGUMENT, q.latency, ["n1"]))
        self.assertIn("2", self.assertFault(BAD_ARGUMENT, q.paths, {}, {}))
        self.assertIn("n9", self.assertFault(UNKNOWN_NODE, q.latency, {"src": "n9"}))
        self.assertIn("n9", self.assertFault(UNKNOWN_NODE, q.summary, {"dst": "n9"}))
        anonymous = xmlrpc.client.ServerProxy(
            f"http://127.0.0.1:{self.lab.ports['xmlrpc']}/RPC2")
        wrong = self.lab.proxy("bob", "not-the-token")
        for method in ("latency", "abw", "throughput", "summary", "paths"):
            self.assertFault(NOT_AUTHENTICATED, getattr(anonymous.query, method), {})
            self.assertFault(NOT_AUTHENTICATED, getattr(wrong.query, method), {})

    def test_cli_results_reads_the_new_answer(self):
        out = subprocess.run([binary("flexmon"), "--url", self.lab.url(), "results"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.strip().splitlines()
        self.assertEqual(len(lines), 1 + 6, out.stdout)  # a header and the newest of each path
        self.assertTrue(lines[0].startswith("SRC"), out.stdout)


if __name__ == "__main__":
    unittest.main()
