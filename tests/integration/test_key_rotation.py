"""Key rotation with results in flight (issue 14), with the real binaries on
loopback: a prober of n1 measures and sends under key 1; the manager and the
collector are restarted with keys 1 and 2, then the prober with key 2, then
the manager and the collector with key 1 retired (schemas/wire.md, "Key
rotation"). At the end every result n1 produced is stored once, and a frame
under the retired key is refused and counted by both. Every wait is bounded."""

import os
import re
import secrets
import socket
import sqlite3
import sys
import unittest

from flexmon_harness import Flexmon, binary, wait_alive, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "faults"))
import wire_codec as w  # noqa: E402


class RotationLab(Flexmon):
    """Two nodes; n1's spool records every result it produced (history)."""

    def __init__(self):
        self.key2 = secrets.token_hex(32)
        super().__init__(nodes=2)
        with open(self.config) as f:
            text = f.read()
        found = re.search(r"\{id: n1, [^}]*key: ([0-9a-f]+)\}", text)
        if not found:
            raise RuntimeError("the harness config changed: cannot find n1's key")
        self.key1 = found.group(1)
        self.configs = {
            "key1": self.config,
            "both": self.write("both", self.with_n1_keys(
                text, f"[{{id: 2, key: {self.key2}}}, {{id: 1, key: {self.key1}}}]")),
            "retired": self.write("retired", self.with_n1_keys(
                text, f"[{{id: 2, key: {self.key2}}}, {{id: 1, key: {self.key1}, retired: true}}]")),
        }

    def config_text(self):
        text = super().config_text()
        text = text.replace("  heartbeat_s: 1\n", "  heartbeat_s: 1\n  spool: {history: true}\n")
        if "history" not in text:
            raise RuntimeError("the harness config changed: cannot turn on the spool history")
        return text + "limits:\n  min_interval_s: 0.05\n"

    def with_n1_keys(self, text, keys):
        return re.sub(r"(\{id: n1, [^}]*)key: [0-9a-f]+\}", lambda m: m.group(1) + f"keys: {keys}}}",
                      text, count=1)

    def write(self, name, text):
        path = os.path.join(self.dir, f"flexmon-{name}.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def run(self, process, config, node=None):
        if process == "prober":
            self.start(f"prober-{node}", [binary("flexmon-prober"), "--config",
                                          self.configs[config], "--node", node])
        else:
            self.start(process, [binary(f"flexmon-{process}"), "--config",
                                 self.configs[config]])
            if process == "manager":
                wait_for(lambda: self.proxy().node.list() is not None, 15, "the manager's API")

    def cache(self, sql):
        con = sqlite3.connect(f"file:{os.path.join(self.dir, 'cache.db')}?mode=ro", uri=True,
                              timeout=30)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def spool(self, sql):
        path = os.path.join(self.dir, "prober", "n1", "spool.db")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def stored_n1(self):
        return self.cache("SELECT boot_epoch, seq FROM results WHERE node = 'n1'")


class KeyRotation(unittest.TestCase):
    def setUp(self):
        self.lab = RotationLab()
        self.addCleanup(self.lab.close)

    def wait_more_results(self, what, epoch=None):
        """Waits until n1 has results stored beyond what it has now (of `epoch`, if given)."""
        def count():
            rows = self.lab.stored_n1()
            return sum(1 for e, _ in rows if epoch is None or e == epoch)
        before = count()
        wait_for(lambda: count() >= before + 20, 60, what)

    def test_rotation_with_results_in_flight_loses_and_doubles_nothing(self):
        lab = self.lab
        lab.run("collector", "key1")
        lab.run("manager", "key1")
        for node in lab.nodes:
            lab.run("prober", "key1", node)
        api = lab.proxy()
        wait_alive(api, 2)
        request = api.probe.request({"tool": "latency", "paths": [["n1", "n2"]],
                                     "interval": 0.05})["id"]
        self.wait_more_results("results under key 1")

        # Step 1: the manager and the collector learn key 2; the prober still
        # seals with key 1 and goes on (it spools while the collector is down).
        lab.stop("collector")
        lab.run("collector", "both")
        lab.stop("manager")
        lab.run("manager", "both")
        self.wait_more_results("results under key 1 after step 1")

        # Step 2: the prober moves to key 2 (its spool goes out under it).
        lab.stop("prober-n1")
        lab.run("prober", "retired", "n1")
        wait_for(lambda: "registered from" in lab.log("manager") and
                 "under key 2" in lab.log("manager"), 30, "n1 registered under key 2")
        with open(os.path.join(lab.dir, "prober", "n1", "boot_epoch")) as f:
            epoch = int(f.read())
        self.wait_more_results("results under key 2", epoch)

        # Step 3: key 1 retired at the manager and the collector.
        lab.stop("collector")
        lab.run("collector", "retired")
        lab.stop("manager")
        lab.run("manager", "retired")
        self.wait_more_results("results under key 2 after step 3", epoch)

        # Every result n1 produced is stored, once.
        lab.proxy().probe.cancel(request)

        def settled():
            produced = set(lab.spool("SELECT epoch, seq FROM history"))
            stored = lab.stored_n1()
            return (not lab.spool("SELECT 1 FROM spool LIMIT 1") and
                    set(stored) == produced and (produced, stored))
        produced, stored = wait_for(settled, 60, "n1's spool empty and every result stored")
        self.assertEqual(len(stored), len(produced), "a result stored twice")
        epochs = {e for e, _ in produced}
        self.assertGreaterEqual(len(epochs), 2, "results of both keys' boot epochs")

        # A frame under the retired key is refused and counted: a datagram
        # sealed properly with key 1 at the collector, and the prober of n1
        # started with its old config (key 1 only) at the manager.
        body = w.results_message("n1", epoch + 100, [w.result(1, "n1")])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(w.seal("n1", bytes.fromhex(lab.key1), body, key_id=1),
                     ("127.0.0.1", lab.ports["collector"]))
        lab.stop("prober-n1")
        lab.run("prober", "key1", "n1")
        wait_for(lambda: "sealed with key 1, which is retired" in lab.log("prober-n1"), 30,
                 "the stale prober told that key 1 is retired")
        wait_for(lambda: "sealed with key 1, which is retired" in lab.log("collector"), 30,
                 "the collector refusing the datagram under key 1")
        lab.stop("prober-n1")
        self.assertEqual(lab.stop("collector"), 0)
        self.assertEqual(lab.stop("manager"), 0)
        collector_counts = re.findall(r"(\d+) retired key", lab.log("collector"))
        self.assertTrue(collector_counts and int(collector_counts[-1]) >= 1, lab.log("collector"))
        manager_counts = re.findall(r"(\d+) retired key", lab.log("manager"))
        self.assertTrue(manager_counts and int(manager_counts[-1]) >= 1, lab.log("manager"))
        self.assertEqual(set(lab.stored_n1()), produced, "nothing stored under the retired key")


if __name__ == "__main__":
    unittest.main()
