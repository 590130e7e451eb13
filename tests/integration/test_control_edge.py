"""The manager's control channel when descriptors run out (issue 14, item 4):
the real manager, started with a low RLIMIT_NOFILE, gets more connections
than it has descriptors. Its accept loop used to fail at once, again and
again (3.6 million log lines in 8 s); now it pauses, makes room by closing
the oldest unregistered connection, and logs a bounded number of lines.
Every wait is bounded; nothing asserts on elapsed time."""

import os
import resource
import socket
import subprocess
import time
import unittest

from flexmon_harness import Flexmon, binary, wait_for

# Descriptors the manager may open: enough to start, far fewer than the
# connections below.
NOFILE = 64
CONNECTIONS = 300
HOLD_S = 4


class EdgeLab(Flexmon):
    def config_text(self):
        text = super().config_text()
        text = text.replace(
            "  dead_after_s: 10\n",
            "  dead_after_s: 10\n"
            "  control_max_connections: 100000\n"
            "  control_max_unregistered_per_address: 65535\n")
        if "control_max_connections" not in text:
            raise RuntimeError("the harness config changed: cannot raise the control limits")
        return text


def limit_descriptors():
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


class ControlEdge(unittest.TestCase):
    def setUp(self):
        self.lab = EdgeLab(nodes=1)
        self.addCleanup(self.lab.close)
        self.log_path = os.path.join(self.lab.dir, "manager.log")
        with open(self.log_path, "wb") as log:
            self.lab.procs["manager"] = subprocess.Popen(
                [binary("flexmon-manager"), "--config", self.lab.config],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_descriptors)
        wait_for(lambda: self.lab.proxy().node.list() is not None, 15, "the manager's API")

    def lines(self):
        with open(self.log_path, "rb") as f:
            return f.read().count(b"\n")

    def test_out_of_descriptors_pauses_the_accept_loop(self):
        port = self.lab.ports["control"]
        before = self.lines()
        held = []
        try:
            for _ in range(CONNECTIONS):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                held.append(s)
            # The manager is out of descriptors now: accept fails for the
            # connections left in its backlog while these stay open.
            time.sleep(HOLD_S)
            grown = self.lines() - before
        finally:
            for s in held:
                s.close()
        # Before: ~450,000 lines a second. Now: the rate-limited warnings
        # (20 per 10 s and a summary) and a few more.
        self.assertLess(grown, 200, f"{grown} log lines while out of descriptors")
        with open(self.log_path, errors="replace") as f:
            self.assertIn("cannot accept a connection", f.read())

        # Once they are gone, a prober's connection is served again.
        def hello():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                return len(s.recv(4)) == 4
        wait_for(hello, 30, "a Hello on a new control connection")
        self.assertTrue(self.lab.proxy().node.list() is not None)
        self.assertEqual(self.lab.stop("manager"), 0)


if __name__ == "__main__":
    unittest.main()
