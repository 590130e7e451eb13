"""Sharing safely, end to end: a real manager, collector and three probers on
loopback, driven through Python's standard-library xmlrpc.client. Exercises
every method of the API (probe.request with dry_run, probe.edit with a
temporary change, probe.get, probe.list, probe.cancel, user.usage,
node.list, query.latency, system.*), the documented limit and budget faults,
shared streams readable by every sharer, and a manager restart that loses no
request. No assertion on wall-clock time; every wait is bounded."""

import unittest

from flexmon_harness import FaultAssertions, Flexmon, wait_alive, wait_for

BAD_ARGUMENT = 4001
NOT_PERMITTED = 4030
LIMIT_EXCEEDED = 4290
BUDGET_EXCEEDED = 4291

METHODS = ["probe.request", "probe.edit", "probe.get", "probe.list", "probe.cancel",
           "user.usage", "node.list", "query.latency"]

# One default latency measurement (5 packets of 64 bytes, both ways, with
# IP/UDP headers) is 920 bytes: 7360 bit/s at a 1 s interval.
ONE_PATH_AT_1S = 2 * 5 * (64 + 28) * 8


class SharingLab(Flexmon):
    def config_text(self):
        return super().config_text() + (
            "limits:\n"
            "  roles:\n"
            "    user: {max_requests_per_user: 4}\n"
            "budgets:\n"
            f"  user: {{bps: {ONE_PATH_AT_1S * 3}}}\n"
            "  users:\n"
            "    - {name: admin, bps: 1000000000}\n")


class Sharing(FaultAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = SharingLab(nodes=3)
        try:
            cls.lab.start_all()
        except Exception:
            cls.lab.close()
            raise
        cls.admin = cls.lab.proxy("admin")
        cls.bob = cls.lab.proxy("bob")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()

    def tearDown(self):
        for r in self.admin.probe.list():
            if r["state"] == "active":
                self.admin.probe.cancel(r["id"])

    def test_1_shared_stream_results_are_readable_by_every_sharer(self):
        wait_alive(self.admin, 3)
        args = {"count": 2, "spacing_ms": 10, "timeout_ms": 500}
        mine = self.admin.probe.request({"tool": "latency", "paths": [["n1", "n2"]],
                                         "interval": 1, "args": args})
        self.assertEqual(mine["new_streams"], 1)
        bobs = self.bob.probe.request({"tool": "latency", "paths": [["n1", "n2"]],
                                       "interval": 5, "args": args})
        self.assertEqual(bobs["new_streams"], 0)
        self.assertEqual(bobs["shared_streams"], 1)
        # Bob reads the results the shared stream produced (at admin's rate).
        rows = wait_for(lambda: [r for r in self.bob.query.latency(
            {"src": "n1", "dst": "n2", "limit": 100})["rows"] if r["status"] == "ok"], 30,
            "results of the shared stream, read by bob")
        self.assertTrue(all(r["src"] == "n1" and r["dst"] == "n2" for r in rows))
        # Charging rule: bob pays a third of the slow layer... of his own 5 s
        # rate split two ways; admin the rest. Together: the stream's cost.
        got_bob = self.bob.probe.get(bobs["id"])
        got_admin = self.admin.probe.get(mine["id"])
        total = got_bob["charged"]["bps"] + got_admin["charged"]["bps"]
        stream = ONE_PATH_AT_1S * 2 / 5  # count 2 instead of 5, at 1 s
        self.assertAlmostEqual(total, stream, places=3)
        self.assertAlmostEqual(got_bob["charged"]["bps"], stream / 5 / 2, places=3)
        nodes = {n["id"]: n for n in self.admin.node.list()}
        for field in ["shortfall", "skipped_slots", "behind_streams", "paused_streams", "cost"]:
            self.assertIn(field, nodes["n1"])
        self.assertGreater(nodes["n1"]["cost"]["bps"], 0)

    def test_2_dry_run_limits_and_budgets(self):
        mesh = {"tool": "latency", "nodes": ["n1", "n2", "n3"], "interval": 1}
        before = self.bob.probe.list()
        dry = self.bob.probe.request(dict(mesh, dry_run=True))
        self.assertFalse(dry["admitted"])
        self.assertEqual(dry["fault_code"], BUDGET_EXCEEDED)
        self.assertNotIn("id", dry)
        self.assertEqual(self.bob.probe.list(), before)
        message = self.assertFault(BUDGET_EXCEEDED, self.bob.probe.request, mesh)
        self.assertIn("budget user bob bps", message)
        self.assertIn("allowed", message)
        ok = self.bob.probe.request(dict(mesh, interval=30, dry_run=True))
        self.assertTrue(ok["admitted"])
        self.assertAlmostEqual(ok["cost"]["bps"], 6 * ONE_PATH_AT_1S / 30, places=3)
        for i in range(4):
            self.bob.probe.request({"tool": "latency", "paths": [["n2", "n3"]], "interval": 60})
        message = self.assertFault(LIMIT_EXCEEDED, self.bob.probe.request,
                                   {"tool": "latency", "paths": [["n2", "n3"]], "interval": 60})
        self.assertIn("max_requests_per_user: 5", message)
        self.assertIn("4 allowed", message)
        usage = self.bob.user.usage()
        self.assertEqual(usage["requests"], {"used": 4.0, "limit": 4.0})
        self.assertLessEqual(usage["bps"]["reserved"], usage["bps"]["budget"])
        self.assertFault(NOT_PERMITTED, self.bob.user.usage, "admin")
        self.assertEqual(self.admin.user.usage("bob")["user"], "bob")
        # Tool arguments and intervals per tool.
        self.assertFault(BAD_ARGUMENT, self.admin.probe.request,
                         {"tool": "abw", "paths": [["n1", "n2"]], "interval": 10})
        abw = self.admin.probe.request({"tool": "abw", "paths": [["n1", "n3"]], "interval": 600,
                                        "args": {"max_rate_bps": 1000000,
                                                 "max_bytes": 200000,
                                                 "max_duration_ms": 1000},
                                        "dry_run": True})
        self.assertTrue(abw["admitted"])
        self.assertAlmostEqual(abw["cost"]["bps"], 125000 * 8 / 600, places=3)

    def test_3_edit_temporarily_and_cancel(self):
        r = self.bob.probe.request({"tool": "latency", "paths": [["n3", "n1"]], "interval": 30,
                                    "priority": 1})
        edited = self.bob.probe.edit(r["id"], {"interval": 10, "priority": 7, "for": 600})
        self.assertEqual(edited["interval"], 10)
        self.assertEqual(edited["priority"], 7)
        self.assertEqual(edited["temporary"]["interval"], 30)
        self.assertEqual(edited["temporary"]["priority"], 1)
        self.assertFault(BUDGET_EXCEEDED, self.bob.probe.edit, r["id"],
                         {"interval": 1, "args": {"count": 50}})
        self.assertFault(BAD_ARGUMENT, self.bob.probe.edit, r["id"], {"paths": []})
        other = self.admin.probe.request({"tool": "latency", "paths": [["n1", "n3"]],
                                          "interval": 30})
        self.assertFault(NOT_PERMITTED, self.bob.probe.edit, other["id"], {"interval": 60})
        self.assertEqual(self.bob.probe.cancel(r["id"])["state"], "cancelled")
        self.assertFault(BAD_ARGUMENT, self.bob.probe.edit, r["id"], {"interval": 60})
        self.assertIn(r["id"], [x["id"] for x in self.admin.probe.list()])

    def test_4_every_method_is_listed_and_documented(self):
        listed = self.admin.system.listMethods()
        for method in METHODS:
            self.assertIn(method, listed)
            self.assertGreater(len(self.admin.system.methodHelp(method)), 20, method)
            self.assertTrue(self.admin.system.methodSignature(method))

    def test_5_restart_mid_run_loses_no_request(self):
        r = self.bob.probe.request({"tool": "latency", "nodes": ["n1", "n3"], "interval": 60})
        self.bob.probe.edit(r["id"], {"interval": 20, "for": 3600})
        before = self.admin.probe.list()
        self.assertEqual(self.lab.stop("manager"), 0)
        self.lab.start_manager()
        after = self.admin.probe.list()
        self.assertEqual([(x["id"], x["state"], x["interval"]) for x in after],
                         [(x["id"], x["state"], x["interval"]) for x in before])
        self.assertEqual(self.bob.probe.get(r["id"])["temporary"]["interval"], 60)
        # Probers reconnect and get their full assignment: nodes alive again.
        wait_alive(self.admin, 3, timeout=30)  # the probers registered again


if __name__ == "__main__":
    unittest.main()
