"""Self-test of the network lab: the lab creates the properties it promises.

Run as root:  python3 tests/netlab/test_netlab.py -v
(needs the relay built: cmake -S tests/netlab -B /tmp/netlab-build &&
cmake --build /tmp/netlab-build, or FLEXMON_NETLAB_RELAY=/path/to/relay).

Asserts only on measured network properties, with generous tolerances; never
on how long the test itself takes. Every loop and wait is bounded.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netlab  # noqa: E402


def _skip_reason():
    reason = netlab.unavailable_reason()
    if reason:
        return reason
    try:
        netlab.find_binary(netlab.RELAY_NAME)
        netlab.find_binary(netlab.UDPGEN_NAME)
    except netlab.NetlabError as e:
        return str(e)
    return None


SKIP = _skip_reason()


def _leftovers(lab_id):
    """Namespaces, processes and state that still carry the lab's prefix."""
    tag = f"{netlab.PREFIX}{lab_id}-"
    left = [ns for ns in netlab.list_namespaces() if ns.startswith(tag)]
    for d in os.listdir("/proc"):
        if d.isdigit() and tag in netlab._pid_cmdline(int(d)):
            left.append(f"pid {d}: {netlab._pid_cmdline(int(d))[:80]}")
    if os.path.exists(os.path.join(netlab.STATE_DIR, lab_id)):
        left.append("state dir")
    return left


class ParseTest(unittest.TestCase):
    """Spec parsing; needs no privileges."""

    def test_link_options(self):
        link = netlab.parse_link("a-b:rate=20mbit,delay=10ms,jitter=1ms,loss=1.5,loss_ba=0.01")
        self.assertEqual((link.a, link.b), ("a", "b"))
        self.assertEqual(link.rate_ab, 20e6)
        self.assertEqual(link.rate_ba, 20e6)
        self.assertEqual(link.delay_ab_us, 10000)
        self.assertEqual(link.jitter_ba_us, 1000)
        self.assertEqual(link.loss_ab, 1.5)
        self.assertEqual(link.loss_ba, 0.01)
        self.assertTrue(link.uses_relay)
        self.assertFalse(netlab.parse_link("a-b:rate=1gbit").uses_relay)
        self.assertTrue(netlab.parse_link("a-b:relay=1").uses_relay)

    def test_bad_specs(self):
        for bad in ("a", "a-a", "A-b", "a-b:rate=fast", "a-b:loss=101", "a-b:colour=red",
                    "a-b:delay", "a-b-c"):
            with self.assertRaises(netlab.NetlabError, msg=bad):
                netlab.parse_link(bad)

    def test_yaml_subset(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("# lab\nseed: 7\nlinks:\n"
                    "  - a-b:rate=20mbit,delay=10ms\n"
                    "  - b-c: delay=5ms,loss=0.5   # comment\n"
                    "  - link: c-d\n"
                    "    rate: 10mbit\n"
                    "    jitter: 1ms\n")
        try:
            spec = netlab.load_spec(f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual(spec["seed"], 7)
        self.assertEqual([(x.a, x.b) for x in spec["links"]], [("a", "b"), ("b", "c"), ("c", "d")])
        self.assertEqual(spec["links"][1].loss_ab, 0.5)
        self.assertEqual(spec["links"][2].rate_ab, 10e6)
        self.assertEqual(spec["links"][2].jitter_ab_us, 1000)


@unittest.skipIf(SKIP, f"netlab unavailable: {SKIP}")
class LabTest(unittest.TestCase):

    def _rtts(self, lab, src, dst, count, interval=0.01):
        lab.ping(src, lab.address(dst, src), count=10, interval=interval)  # warm up
        return netlab.summarize(lab.ping(src, lab.address(dst, src), count=count,
                                         interval=interval))

    def test_delay(self):
        # delay applies in each direction: RTT = 2 x 5 ms; one-way link: RTT = 10 ms.
        with netlab.Lab(["a-b:delay=5ms", "a-c:delay_ab=10ms"]) as lab:
            for peer in ("b", "c"):
                s = self._rtts(lab, "a", peer, count=200)
                self.assertEqual(s["received"], 200)
                self.assertAlmostEqual(s["median"], 10.0, delta=0.5, msg=f"a-{peer}: {s}")
                self.assertGreaterEqual(s["min"], 9.9, msg=f"a-{peer}: {s}")

    def test_jitter(self):
        # Uniform +-2 ms on one direction: stdev 2/sqrt(3) = 1.15 ms.
        with netlab.Lab(["a-b:delay_ab=10ms,jitter_ab=2ms,relay=1"]) as lab:
            s = self._rtts(lab, "a", "b", count=300, interval=0.02)
            self.assertAlmostEqual(s["median"], 10.0, delta=0.5, msg=str(s))
            self.assertGreater(s["stdev"], 0.8, msg=str(s))
            self.assertLess(s["stdev"], 1.6, msg=str(s))
            self.assertGreater(s["min"], 7.9, msg=str(s))

    def test_loss(self):
        # 10 % loss a->b only: about 10 % of echoes lost. n=1000: sigma ~ 0.95 %.
        with netlab.Lab(["a-b:loss_ab=10"]) as lab:
            s = netlab.summarize(lab.ping("a", lab.address("b", "a"), count=1000,
                                          interval=0.002))
            self.assertGreater(s["loss_pct"], 6.0, msg=str(s))
            self.assertLess(s["loss_pct"], 14.0, msg=str(s))

    def test_rate(self):
        # tbf 20 Mbit/s on a relay link; TCP goodput within 15 % (payload/IP = 0.965).
        with netlab.Lab(["a-b:rate=20mbit,delay=1ms"]) as lab:
            srv = lab.popen("b", ["iperf3", "-s", "-1", "-B", lab.address("b", "a")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r = None
            for _ in range(20):  # bounded wait for the server to listen
                r = lab.exec("a", ["iperf3", "-c", lab.address("b", "a"), "-t", "2", "-J"],
                             timeout=30)
                if r.returncode == 0:
                    break
                time.sleep(0.1)
            self.assertEqual(r.returncode, 0, r.stdout[-500:] + r.stderr[-500:])
            bps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
            self.assertAlmostEqual(bps / 20e6, 1.0, delta=0.15, msg=f"{bps / 1e6:.2f} Mbit/s")
            srv.wait(timeout=10)

    def test_multihop_and_cross_traffic(self):
        # a - b - c; c reaches a through b; 5 Mbit/s cross traffic on a 10 Mbit/s link
        # leaves TCP about half (wide tolerance).
        with netlab.Lab(["a-b", "b-c:rate=10mbit,relay=1,cross_ba=5mbit"]) as lab:
            s = netlab.summarize(lab.ping("a", lab.address("c", "b"), count=20))
            self.assertEqual(s["received"], 20, msg=str(s))
            srv = lab.popen("b", ["iperf3", "-s", "-1", "-B", lab.address("b", "c")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r = None
            for _ in range(20):
                r = lab.exec("c", ["iperf3", "-c", lab.address("b", "c"), "-t", "2", "-J"],
                             timeout=30)
                if r.returncode == 0:
                    break
                time.sleep(0.1)
            self.assertEqual(r.returncode, 0, r.stderr[-500:])
            bps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
            self.assertGreater(bps, 2.5e6)
            self.assertLess(bps, 7.0e6)
            srv.wait(timeout=10)

    def test_cleanup_after_exit_and_error(self):
        lab = netlab.Lab(["a-b:delay=1ms,loss=1,rate=10mbit", "b-c"])
        with lab:
            lab.popen("b", ["sleep", "30"])
            self.assertEqual(len([n for n in netlab.list_namespaces()
                                  if n.startswith(f"fxl{lab.id}-")]), 3)
        self.assertEqual(_leftovers(lab.id), [])
        lab2 = netlab.Lab(["a-b:delay=1ms"])
        with self.assertRaises(ZeroDivisionError):
            with lab2:
                1 / 0
        self.assertEqual(_leftovers(lab2.id), [])

    def test_cleanup_after_owner_killed(self):
        code = ("import sys, time; sys.path.insert(0, %r); import netlab\n"
                "lab = netlab.Lab(['a-b:delay=1ms']).up()\n"
                "print(lab.id, flush=True); time.sleep(60)\n" % os.path.dirname(netlab.__file__))
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            lab_id = child.stdout.readline().strip()
            self.assertTrue(lab_id, "child did not bring its lab up")
            self.assertNotEqual(_leftovers(lab_id), [])
        finally:
            child.kill()
            child.wait(timeout=10)
            child.stdout.close()
        self.assertIn(lab_id, netlab.cleanup())
        self.assertEqual(_leftovers(lab_id), [])


if __name__ == "__main__":
    unittest.main()
