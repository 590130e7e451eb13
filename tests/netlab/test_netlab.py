"""Self-test of the network lab: the lab creates the properties it promises.

Run as root:  python3 tests/netlab/test_netlab.py -v
(needs the relay built: cmake -S tests/netlab -B /tmp/netlab-build &&
cmake --build /tmp/netlab-build, or FLEXMON_NETLAB_RELAY=/path/to/relay).

Asserts only on measured network properties, with generous tolerances; never
on how long the test itself takes. Every loop and wait is bounded.
"""

import json
import os
import re
import shutil
import signal
import statistics
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


def _iperf3(lab, client, server_addr):
    """TCP goodput (bit/s) of a 2-s iperf3 run from `client` to a server on
    `server_addr` (host b). Bounded retries: the server may not listen yet,
    and on a loaded host iperf3 now and then ends a run with an error and no
    result; the server (no -1) stays up for the retries and dies with the lab."""
    lab.popen("b", ["iperf3", "-s", "-B", server_addr], stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL)
    r = None
    for _ in range(20):
        r = lab.exec(client, ["iperf3", "-c", server_addr, "-t", "2", "-J"], timeout=30)
        if r.returncode == 0:
            end = json.loads(r.stdout).get("end", {})
            if "sum_received" in end:
                return end["sum_received"]["bits_per_second"]
        time.sleep(0.1)
    raise AssertionError(f"iperf3 gave no result: {r.stdout[-500:]} {r.stderr[-500:]}")


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
        # Uniform +-2 ms on one direction: its middle half spans 2 ms (quartiles
        # at -1 and +1 ms). Quartiles, not the standard deviation: one echo
        # that the loaded host's pinger sends late would dominate the latter.
        with netlab.Lab(["a-b:delay_ab=10ms,jitter_ab=2ms,relay=1"]) as lab:
            lab.ping("a", lab.address("b", "a"), count=10, interval=0.02)  # warm up
            rtts = sorted(x for x in lab.ping("a", lab.address("b", "a"), count=300,
                                              interval=0.02) if x is not None)
            self.assertEqual(len(rtts), 300)
            iqr = rtts[3 * len(rtts) // 4] - rtts[len(rtts) // 4]
            self.assertAlmostEqual(statistics.median(rtts), 10.0, delta=0.5, msg=str(rtts))
            self.assertGreater(iqr, 1.5, msg=str(rtts))
            self.assertLess(iqr, 2.5, msg=str(rtts))
            self.assertGreater(rtts[0], 7.9, msg=str(rtts))

    def test_truth_log_gives_each_echo_its_applied_delay(self):
        # 5 ms +- 1 ms each way: every echo's applied RTT is at least 8 ms
        # (the relay never writes early), and the RTT measured with kernel
        # stamps is not below it (by more than the gap between the arrival
        # tap's stamp and the pinger's send stamp in the same transmit path:
        # under a microsecond, 53 us seen once with a stalled vCPU; 0.2 ms
        # allowed) and exceeds it by only the kernel's path (well under a
        # millisecond, even loaded). The log records when the
        # relay really wrote, counted from the kernel's arrival stamp, so a
        # relay that could not run (seen: one echo of 50 at 16 ms with both
        # vCPUs busy with other builds) shows there as the longer delay the
        # echo really had; most echoes (45 of 50) are within 12 ms plus
        # 0.5 ms of release lateness.
        with netlab.Lab(["a-b:delay=5ms,jitter=1ms"], truth=True) as lab:
            rtts = lab.ping("a", lab.address("b", "a"), count=50, interval=0.02)
            applied, offset = lab.echo_truth("a", "b")
            self.assertGreater(offset, 0)
            self.assertEqual(len(applied), 50, applied)
            by_seq = {seq: ns / 1e6 for (_, seq), ns in applied.items()}
            self.assertTrue(all(v >= 8.0 for v in by_seq.values()), by_seq)
            self.assertGreaterEqual(sum(v <= 12.5 for v in by_seq.values()), 45, by_seq)
            extra = sorted(rtts[seq] - v for seq, v in by_seq.items() if rtts[seq] is not None)
            self.assertGreaterEqual(extra[0], -0.2, extra)
            self.assertLess(extra[len(extra) // 2], 1.0, extra)
            self.assertEqual(lab.echo_truth("a", "b", offset), ({}, offset))

    def test_relay_adds_only_its_delay(self):
        # The relay holds each packet from the kernel's stamp of its arrival
        # on the TUN device, so its own wake-up and read (about 100 us per
        # echo in this VM, varying with the load) are inside the configured
        # delay: an echo over a relay link takes the delay the relay applied
        # (truth log) plus what an echo over a plain veth link takes, within a
        # few tens of us. Holding from the read instead added 110-125 us here.
        # The best of three rounds, so one round disturbed by a loaded host
        # does not decide.
        with netlab.Lab(["a-b:delay=1ms", "a-c"], truth=True) as lab:
            offset, rounds = 0, []
            for _ in range(3):
                lab.ping("a", lab.address("b", "a"), count=10)  # warm up
                rtts = lab.ping("a", lab.address("b", "a"), count=200)
                applied, offset = lab.echo_truth("a", "b", offset)
                extra_us = statistics.median((rtts[seq] - ns / 1e6) * 1e3
                                             for (_, seq), ns in applied.items()
                                             if seq < len(rtts) and rtts[seq] is not None)
                veth_us = statistics.median(x * 1e3 for x in lab.ping("a", lab.address("c", "a"),
                                                                      count=200) if x)
                rounds.append(extra_us - veth_us)
            self.assertLess(min(rounds), 60.0, rounds)

    def test_relays_run_on_the_cpu_given(self):
        # relay_cpu puts every relay of the lab on that CPU (bench/run-lab
        # compares two links whose relays must see the same CPU state); a CPU
        # the kernel refuses is logged and the relay still carries packets.
        cpu = max(os.sched_getaffinity(0))
        with netlab.Lab(["a-b:delay=1ms", "a-c:relay=1"], relay_cpu=cpu) as lab:
            for p in lab._procs:
                self.assertEqual(os.sched_getaffinity(p.pid), {cpu}, netlab._pid_cmdline(p.pid))
            for peer in ("b", "c"):
                self.assertEqual(self._rtts(lab, "a", peer, count=20)["received"], 20, peer)
        absent = 1023  # CPU_SETSIZE - 1: no such CPU on this machine
        with netlab.Lab(["a-b:delay=1ms"], relay_cpu=absent) as lab:
            self.assertEqual(self._rtts(lab, "a", "b", count=20)["received"], 20)
            self.assertIn(f"CPU {absent} refused", lab.relay_log("a", "b"))

    def test_rate_limit_lets_no_burst_through(self):
        # 30 back-to-back 1000-byte datagrams into a 10 Mbit/s link: a real
        # bottleneck delivers them one frame time (1014 B, 0.81 ms) apart; the
        # bucket may let two frames through at once, never more.
        receiver = (
            "import socket, struct, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, 35, 1)\n"  # SO_TIMESTAMPNS
            "s.bind((sys.argv[1], 5001)); s.settimeout(5); print('ready', flush=True)\n"
            "t = []\n"
            "while len(t) < 30:\n"
            "    _, anc, _, _ = s.recvmsg(2048, 64)\n"
            "    sec, ns = struct.unpack('qq', anc[0][2][:16]); t.append(sec * 10**9 + ns)\n"
            "print(t[-1] - t[0])\n")
        sender = ("import socket, sys\n"
                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  "for _ in range(30): s.sendto(bytes(972), (sys.argv[1], 5001))\n")
        with netlab.Lab(["a-b:rate=10mbit"]) as lab:
            b = lab.address("b", "a")
            rx = lab.popen("b", [sys.executable, "-c", receiver, b], stdout=subprocess.PIPE,
                           text=True)
            self.assertEqual(rx.stdout.readline().strip(), "ready")
            lab.exec("a", [sys.executable, "-c", sender, b], check=True)
            out, _ = rx.communicate(timeout=30)
            spread_ms = int(out) / 1e6
            frame_ms = 1014 * 8 / 10e6 * 1e3
            self.assertGreaterEqual(spread_ms, (30 - 1 - 2) * frame_ms * 0.95, spread_ms)
            # The bucket itself: two 1514-byte frames (tc prints it rounded down).
            qdisc = lab.exec("a", ["tc", "qdisc", "show", "dev", lab.device("a", "b")],
                             check=True).stdout
            burst = int(re.search(r"burst (\d+)b", qdisc).group(1))
            self.assertLessEqual(burst, 2 * 1514, qdisc)
            self.assertGreaterEqual(burst, 2 * 1514 - 8, qdisc)

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
            bps = _iperf3(lab, "a", lab.address("b", "a"))
            self.assertAlmostEqual(bps / 20e6, 1.0, delta=0.15, msg=f"{bps / 1e6:.2f} Mbit/s")

    def test_multihop_and_cross_traffic(self):
        # a - b - c; c reaches a through b; 5 Mbit/s cross traffic on a 10 Mbit/s link
        # leaves TCP about half (wide tolerance).
        with netlab.Lab(["a-b", "b-c:rate=10mbit,relay=1,cross_ba=5mbit"]) as lab:
            s = netlab.summarize(lab.ping("a", lab.address("c", "b"), count=20))
            self.assertEqual(s["received"], 20, msg=str(s))
            bps = _iperf3(lab, "c", lab.address("b", "c"))
            self.assertGreater(bps, 2.5e6)
            self.assertLess(bps, 7.0e6)

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

    def test_cleanup_after_sigterm_and_sighup(self):
        # A benchmark stopped with SIGTERM (timeout, systemd, CI) or SIGHUP
        # (its terminal closed) removes its lab as Ctrl-C does: with `with`,
        # and also for a lab brought up without it, without anyone running
        # `netlab cleanup` afterwards.
        lab_dir = os.path.dirname(netlab.__file__)
        bodies = {
            "with": "with netlab.Lab(['a-b:delay=1ms', 'b-c']) as lab:\n"
                    "    print(lab.id, flush=True); time.sleep(60)\n",
            "up": "lab = netlab.Lab(['a-b:delay=1ms', 'b-c']).up()\n"
                  "print(lab.id, flush=True); time.sleep(60)\n",
        }
        for sig in (signal.SIGTERM, signal.SIGHUP):
            for kind, body in bodies.items():
                with self.subTest(signal=sig.name, lab=kind):
                    code = f"import sys, time; sys.path.insert(0, {lab_dir!r}); import netlab\n" + body
                    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                             text=True)
                    lab_id = ""
                    try:
                        lab_id = child.stdout.readline().strip()
                        self.assertTrue(lab_id, "child did not bring its lab up")
                        self.assertNotEqual(_leftovers(lab_id), [])
                        child.send_signal(sig)
                        self.assertEqual(child.wait(timeout=60), 128 + sig)
                        self.assertEqual(_leftovers(lab_id), [])
                    finally:
                        if child.poll() is None:
                            child.kill()
                            child.wait(timeout=10)
                        child.stdout.close()
                        if lab_id:
                            netlab.cleanup(lab_id=lab_id)  # only if the test failed

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
