"""End to end: real manager, collector and three probers on loopback, driven
through Python's standard-library xmlrpc.client (nothing from pip), the way
researchers script flexmon. Checks the documented faults too."""

import os
import subprocess
import unittest
import xmlrpc.client

from flexmon_harness import FaultAssertions, Flexmon, binary, wait_alive, wait_for

NOT_AUTHENTICATED = 4010
BAD_ARGUMENT = 4001
UNKNOWN_NODE = 4002
NOT_PERMITTED = 4030
NO_SUCH_REQUEST = 4040

METHODS = ["probe.request", "probe.get", "probe.list", "probe.cancel", "node.list",
           "query.latency"]


class EndToEnd(FaultAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Flexmon(nodes=3)
        try:
            cls.lab.start_all()
        except Exception:
            cls.lab.close()
            raise
        cls.api = cls.lab.proxy()

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()

    def test_1_mesh_results_for_all_six_paths(self):
        nodes = wait_alive(self.api, 3)
        self.assertEqual(sorted(n["id"] for n in nodes), ["n1", "n2", "n3"])

        reply = self.api.probe.request({
            "tool": "latency", "nodes": ["n1", "n2", "n3"], "interval": 1,
            "args": {"method": "udp", "count": 3, "spacing_ms": 10, "timeout_ms": 500}})
        request_id = reply["id"]
        self.assertIsInstance(request_id, str)
        self.assertEqual(reply["paths"], 6)

        def six_paths_ok():
            rows = self.api.query.latency({"latest": True, "limit": 100})["rows"]
            ok = {(r["src"], r["dst"]) for r in rows if r["status"] == "ok"}
            return rows if len(ok) == 6 else None

        rows = wait_for(six_paths_ok, 30, "an ok result on each of the six paths")
        for row in rows:
            self.assertNotEqual(row["src"], row["dst"])
            self.assertEqual(row["sent"], 3)
            self.assertEqual(len(row["rtts_ms"]), 3)
            self.assertGreater(row["rtt_min_ms"], 0)
            self.assertLessEqual(row["rtt_min_ms"], row["rtt_median_ms"])
            self.assertLessEqual(row["rtt_median_ms"], row["rtt_max_ms"])
            self.assertIsInstance(row["time"], float)

        one_path = self.api.query.latency({"src": "n2", "dst": "n3", "limit": 5})["rows"]
        self.assertTrue(one_path)
        self.assertTrue(all(r["src"] == "n2" and r["dst"] == "n3" for r in one_path))

        got = self.api.probe.get(request_id)
        self.assertEqual(got["state"], "active")
        self.assertEqual(len(got["paths"]), 6)
        self.assertIn(request_id, [r["id"] for r in self.api.probe.list()])

        # The command-line client prints the same results as a table.
        env = dict(os.environ, FLEXMON_URL=self.lab.url())
        table = subprocess.run([binary("flexmon"), "results"], env=env, capture_output=True,
                               text=True, timeout=30)
        self.assertEqual(table.returncode, 0, table.stderr)
        lines = table.stdout.strip().splitlines()
        self.assertTrue(lines[0].startswith("SRC"))
        self.assertEqual(len(lines), 7, table.stdout)

        cancelled = self.api.probe.cancel(request_id)
        self.assertEqual(cancelled["state"], "cancelled")
        self.assertEqual(self.api.probe.get(request_id)["state"], "cancelled")

    def test_2_wrong_credentials_are_refused(self):
        wrong = self.lab.proxy("admin", "x" * 32)
        self.assertFault(NOT_AUTHENTICATED, wrong.node.list)
        nobody = self.lab.proxy("mallory", "x" * 32)
        self.assertFault(NOT_AUTHENTICATED, nobody.probe.list)
        anonymous = xmlrpc.client.ServerProxy(
            f"http://127.0.0.1:{self.lab.ports['xmlrpc']}/RPC2")
        self.assertFault(NOT_AUTHENTICATED, anonymous.query.latency, {})
        # Long credentials: the manager parses the header itself (Abyss's own
        # RequestAuth overflows a fixed buffer on these).
        long = self.lab.proxy("admin", "y" * 1000)
        self.assertFault(NOT_AUTHENTICATED, long.node.list)
        # A header past the HTTP server's limit is refused at the HTTP level;
        # the server must stay up.
        huge = self.lab.proxy("admin", "y" * 20000)
        with self.assertRaises((xmlrpc.client.Fault, xmlrpc.client.ProtocolError, OSError)):
            huge.node.list()
        self.assertTrue(self.api.node.list())

    def test_3_bad_specs_get_documented_faults(self):
        mesh = {"tool": "latency", "nodes": ["n1", "n2"], "interval": 5}
        message = self.assertFault(BAD_ARGUMENT, self.api.probe.request,
                                   dict(mesh, args={"count": 100000}))
        self.assertIn("count", message)
        self.assertFault(BAD_ARGUMENT, self.api.probe.request, dict(mesh, interval=0.001))
        self.assertFault(BAD_ARGUMENT, self.api.probe.request, dict(mesh, tool="teleport"))
        self.assertFault(BAD_ARGUMENT, self.api.probe.request, dict(mesh, colour="blue"))
        self.assertFault(BAD_ARGUMENT, self.api.probe.request, {"tool": "latency"})
        self.assertFault(BAD_ARGUMENT, self.api.probe.request, "not a struct")
        message = self.assertFault(UNKNOWN_NODE, self.api.probe.request,
                                   dict(mesh, nodes=["n1", "n9"]))
        self.assertIn("n9", message)
        self.assertFault(NO_SUCH_REQUEST, self.api.probe.get, "r999999")
        self.assertFault(NO_SUCH_REQUEST, self.api.probe.cancel, "r999999")
        self.assertFault(BAD_ARGUMENT, self.api.probe.cancel, "no-such-id")

    def test_4_requests_belong_to_their_owner(self):
        mine = self.api.probe.request({"tool": "latency", "paths": [["n1", "n2"]],
                                       "interval": 30})["id"]
        bob = self.lab.proxy("bob")
        self.assertFault(NOT_PERMITTED, bob.probe.cancel, mine)
        self.assertNotIn(mine, [r["id"] for r in bob.probe.list()])
        bobs = bob.probe.request({"tool": "latency", "paths": [["n2", "n1"]], "interval": 30})
        self.assertEqual([r["id"] for r in bob.probe.list()], [bobs["id"]])
        self.assertIn(bobs["id"], [r["id"] for r in self.api.probe.list()])
        self.assertEqual(self.api.probe.cancel(bobs["id"])["state"], "cancelled")
        self.api.probe.cancel(mine)

    def test_5_every_method_is_documented(self):
        listed = self.api.system.listMethods()
        for method in METHODS:
            self.assertIn(method, listed)
            self.assertGreater(len(self.api.system.methodHelp(method)), 20, method)

    def test_6_requests_survive_a_manager_restart(self):
        request_id = self.api.probe.request({"tool": "latency", "nodes": ["n1", "n3"],
                                             "interval": 60})["id"]
        self.assertEqual(self.lab.stop("manager"), 0)
        self.lab.start_manager()
        self.assertEqual(self.api.probe.get(request_id)["state"], "active")
        self.api.probe.cancel(request_id)

    def test_7_every_daemon_stops_cleanly_on_sigterm(self):
        # Runs last (unittest orders by name); the class fixture is done after.
        for name in list(self.lab.procs):
            self.assertEqual(self.lab.stop(name), 0, self.lab.log(name)[-2000:])


class CommandLine(unittest.TestCase):
    def test_usage_and_config_errors(self):
        lab = Flexmon(nodes=1)
        try:
            bad = os.path.join(lab.dir, "bad.yaml")
            with open(bad, "w") as f:
                f.write(lab.config_text() + "colour: blue\n")
            for name in ["flexmon-manager", "flexmon-collector", "flexmon-prober"]:
                extra = ["--node", "n1"] if name == "flexmon-prober" else []
                run = lambda *a: subprocess.run([binary(name), *a], capture_output=True,
                                                text=True, timeout=30)
                self.assertEqual(run("--help").returncode, 0, name)
                self.assertIn("--config", run("--help").stdout)
                self.assertEqual(run("--no-such-flag").returncode, 64, name)
                ok = run("--config", lab.config, "--check-config", *extra)
                self.assertEqual(ok.returncode, 0, ok.stderr)
                broken = run("--config", bad, "--check-config", *extra)
                self.assertEqual(broken.returncode, 78, name)
                self.assertIn("bad.yaml:", broken.stderr)
                self.assertIn("colour: unknown key", broken.stderr)
            # Paths are checked too: a cache that is not SQLite, a state
            # folder where a file stands.
            notes = os.path.join(lab.dir, "notes.txt")
            with open(notes, "w") as f:
                f.write("not a database\n")
            wrong_paths = os.path.join(lab.dir, "paths.yaml")
            with open(wrong_paths, "w") as f:
                f.write(lab.config_text().replace("collector:\n", f"collector:\n  cache_db: {notes}\n")
                        .replace("prober:\n", f"prober:\n  state_dir: {notes}\n"))
            for name, key in [("flexmon-manager", "collector.cache_db"),
                              ("flexmon-collector", "collector.cache_db"),
                              ("flexmon-prober", "prober.state_dir")]:
                extra = ["--node", "n1"] if name == "flexmon-prober" else []
                checked = subprocess.run([binary(name), "--config", wrong_paths, "--check-config",
                                          *extra], capture_output=True, text=True, timeout=30)
                self.assertEqual(checked.returncode, 78, checked.stderr)
                self.assertIn(f"{key}: {notes}", checked.stderr)
            client = subprocess.run([binary("flexmon"), "--bogus"], capture_output=True,
                                    timeout=30)
            self.assertEqual(client.returncode, 64)
        finally:
            lab.close()


if __name__ == "__main__":
    unittest.main()
