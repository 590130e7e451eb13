"""Hostile connections against the real flexmon-manager on loopback: more than
200 at once, slow (one byte a second), idle (nothing sent), oversized (a
Content-Length far past manager.max_request_bytes) and entity bombs (nested
<!ENTITY definitions), from several 127.0.0.x addresses so that the
per-client limit does not refuse them all. Meanwhile a legitimate client's
probe.list must keep answering, and once they are gone the manager's RSS
must come back within 10 % of where it started. Every loop is bounded.
The entity bombs count on the call layer refusing a DOCTYPE before any
parsing (manager/call_handler.cpp, issue 14 item 2): without that each one
costs a worker seconds of CPU and about 128 MB."""

import socket
import threading
import time
import unittest
import xmlrpc.client

from flexmon_harness import Flexmon, wait_for

HTTP_TIMEOUT_S = 3
ATTACK_S = 12
CALL_TIMEOUT_S = 10
SOURCES = [f"127.0.0.{i}" for i in range(10, 18)]  # 8 addresses, 30 connections each
PER_KIND = 60  # slow, idle, oversized and bombs: 240 connections


def entity_bomb():
    """The billion-laughs body: ten levels of ten references, a few hundred bytes."""
    entities = ['<!ENTITY a0 "lol">'] + [
        f'<!ENTITY a{i} "{"".join(f"&a{i - 1};" for _ in range(10))}">' for i in range(1, 10)]
    return ('<?xml version="1.0"?><!DOCTYPE methodCall [' + "".join(entities) + ']>'
            '<methodCall><methodName>probe.list</methodName><params><param><value><string>'
            '&a9;</string></value></param></params></methodCall>').encode()


class LimitedLab(Flexmon):
    def config_text(self):
        return super().config_text().replace(
            "manager:\n", f"manager:\n  http_timeout_s: {HTTP_TIMEOUT_S}\n"
            "  max_connections_per_client: 40\n", 1)


class PatientTransport(xmlrpc.client.Transport):
    """Gives up on a call after CALL_TIMEOUT_S, so a manager that stops
    answering fails the test instead of hanging it."""

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = CALL_TIMEOUT_S
        return connection


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


class Attacker:
    """Keeps PER_KIND connections of each kind open until `stop` is set,
    reopening those that the manager closes."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.opened = 0
        self.most_open = 0
        self.refused = 0  # connects that failed or were answered 503
        self.conns = {}  # socket -> (kind, next byte to send)
        self.source = 0
        self.lock = threading.Lock()

    def dial(self, kind):
        src = SOURCES[self.source % len(SOURCES)]
        self.source += 1
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        try:
            s.bind((src, 0))
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            self.refused += 1
            return
        s.setblocking(False)
        head = b"POST /RPC2 HTTP/1.1\r\nHost: x\r\n"
        if kind == "oversized":
            head += b"Content-Length: 1000000000\r\n\r\n" + b"x" * 4096
        elif kind == "bomb":
            body = entity_bomb()
            head += b"Content-Length: %d\r\n\r\n" % len(body) + body
        elif kind == "slow":
            head += b"Content-Length: 100\r\n\r\n"
        else:
            head = b""
        self.conns[s] = (kind, head if kind != "slow" else b"", head if kind == "slow" else b"")
        if kind in ("oversized", "bomb"):
            try:
                s.send(head)
            except OSError:
                pass
        self.opened += 1

    def run(self):
        kinds = ["slow", "idle", "oversized", "bomb"]
        for kind in kinds:
            for _ in range(PER_KIND):
                self.dial(kind)
        last_trickle = time.monotonic()
        while not self.stop.is_set():
            for s, (kind, _, trickle) in list(self.conns.items()):
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data.startswith(b"HTTP/1.1 503"):
                    self.refused += 1
                if not data:
                    # Closed by the manager (deadline, refusal): open another.
                    del self.conns[s]
                    s.close()
                    self.dial(kind)
            if time.monotonic() - last_trickle >= 1:
                last_trickle = time.monotonic()
                for s, (kind, head, trickle) in list(self.conns.items()):
                    if kind == "slow" and trickle:
                        try:
                            s.send(trickle[:1])
                            self.conns[s] = (kind, head, trickle[1:])
                        except OSError:
                            pass
            self.most_open = max(self.most_open, len(self.conns))
            time.sleep(0.05)
        for s in self.conns:
            s.close()
        self.conns.clear()


class HostileConnections(unittest.TestCase):
    def setUp(self):
        self.lab = LimitedLab(nodes=1)
        self.addCleanup(self.lab.close)
        self.lab.start_manager()
        self.pid = self.lab.procs["manager"].pid

    def test_legitimate_client_is_served_and_memory_comes_back(self):
        def warm():
            with self.lab.proxy() as api:
                for _ in range(50):
                    api.probe.list()
        # Warm, from several clients at once: every worker thread has its
        # malloc arena and first allocations before the baseline is taken.
        warmers = [threading.Thread(target=warm) for _ in range(8)]
        for t in warmers:
            t.start()
        for t in warmers:
            t.join(60)
        baseline = rss_kib(self.pid)

        attacker = Attacker(self.lab.ports["xmlrpc"])
        thread = threading.Thread(target=attacker.run)
        thread.start()
        answered, failures, peak = 0, [], baseline
        try:
            wait_for(lambda: attacker.most_open >= 200, 10, "200 hostile connections open")
            deadline = time.monotonic() + ATTACK_S
            while time.monotonic() < deadline:
                try:
                    # A fresh proxy: one keep-alive connection per call, as most
                    # scripts make them.
                    with xmlrpc.client.ServerProxy(self.lab.url(),
                                                   transport=PatientTransport()) as api:
                        api.probe.list()
                    answered += 1
                except (OSError, xmlrpc.client.Error) as e:
                    failures.append(repr(e))
                peak = max(peak, rss_kib(self.pid))
                time.sleep(0.1)
        finally:
            attacker.stop.set()
            thread.join(30)
        print(f"hostile: {attacker.opened} connections opened, at most {attacker.most_open} "
              f"open, {attacker.refused} refused; {answered} legitimate calls answered, "
              f"{len(failures)} failed; RSS {baseline} KiB before, {peak} KiB at most")
        self.assertGreaterEqual(attacker.most_open, 200)
        self.assertEqual(failures, [])
        self.assertGreater(answered, 0)

        # The manager closes what is left within its deadlines; memory comes back.
        def back():
            return rss_kib(self.pid) <= baseline * 1.10
        try:
            wait_for(back, 4 * HTTP_TIMEOUT_S + 10, "RSS within 10 % of where it started")
        finally:
            print(f"hostile: RSS {rss_kib(self.pid)} KiB after (baseline {baseline} KiB)")
        with self.lab.proxy() as api:
            self.assertEqual(api.probe.list(), [])
        self.assertIsNone(self.lab.procs["manager"].poll())


if __name__ == "__main__":
    unittest.main()
