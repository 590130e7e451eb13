"""Fault suite for stable commit (issue 4): real probers, a real collector
and a real manager on loopback, a lossy relay between probers and collector,
SIGKILLs of the collector and of probers at random moments, a two-minute
collector outage, and forged / truncated / replayed / mutated datagrams sent
straight at the collector. Then every result the probers produced (their
spools' `history` tables, written in the same transaction as the spool) is
compared with the cache. Prints one line:
  faults: results=N lost=0 duplicated=0 collector_kills=K prober_kills=M forged_accepted=0
and exits non-zero on any loss, duplicate or accepted forgery.

Bounded: every wait has a limit; the whole run takes about five minutes.
Knobs (environment): FAULTS_OUTAGE_S (120), FAULTS_MIN_RESULTS (100000)."""

import os
import random
import signal
import socket
import sqlite3
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

from flexmon_harness import Flexmon, binary, wait_for  # noqa: E402
import relay as relay_module  # noqa: E402
import wire_codec as w  # noqa: E402

NODES = int(os.environ.get("FAULTS_NODES", "6"))
INTERVAL_S = float(os.environ.get("FAULTS_INTERVAL_S", "0.04"))
OUTAGE_S = float(os.environ.get("FAULTS_OUTAGE_S", "120"))
MIN_RESULTS = int(os.environ.get("FAULTS_MIN_RESULTS", "100000"))
COLLECTOR_KILLS = 20
PROBER_KILLS = 10
FORGED_EPOCH = 10**12  # never a real epoch: rows with it are accepted forgeries


class FaultLab(Flexmon):
    def __init__(self, relay_port_holder):
        self.relay_port_holder = relay_port_holder
        super().__init__(nodes=NODES)

    def config_text(self):
        text = super().config_text()
        text = text.replace(
            "  heartbeat_s: 1\n",
            "  heartbeat_s: 1\n"
            f"  collectors: [127.0.0.1:{self.relay_port_holder[0]}]\n"
            "  spool: {history: true}\n")
        if "collectors:" not in text:
            raise RuntimeError("the harness config changed: cannot route probers via the relay")
        return text + ("limits:\n  min_interval_s: 0.01\n")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Attacker(threading.Thread):
    """Sends forged, truncated, replayed and mutated datagrams at the collector."""

    def __init__(self, collector_port, relay, keys):
        super().__init__(daemon=True)
        self.to = ("127.0.0.1", collector_port)
        self.relay = relay
        self.keys = keys
        self.random = random.Random(7)
        self.sent = {"forged": 0, "truncated": 0, "replayed": 0, "mutated": 0, "garbage": 0}
        self.stopping = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    def forged(self):
        node = self.random.choice(list(self.keys))
        results = [w.result(self.random.randrange(1, 1000), node) for _ in range(3)]
        body = w.results_message(node, FORGED_EPOCH + self.random.randrange(1000), results)
        kind = self.random.randrange(4)
        if kind == 0:  # sealed with a wrong key
            return w.seal(node, os.urandom(32), body)
        if kind == 1:  # sealed by another node's key, claiming this node
            other = self.random.choice(list(self.keys))
            return w.seal(node, self.keys[other] if other != node else os.urandom(32), body)
        if kind == 2:  # a real node's seal, but results of another src
            other = self.random.choice([n for n in self.keys if n != node] or [node + "x"])
            body = w.results_message(node, FORGED_EPOCH, [w.result(1, other)])
            return w.seal(node, os.urandom(32), body)
        return w.seal("intruder", os.urandom(32), body)  # unknown node

    def run(self):
        while not self.stopping:
            captured = self.relay.captured
            choice = self.random.randrange(5)
            if choice == 0 or not captured:
                data, kind = self.forged(), "forged"
            else:
                real = self.random.choice(captured)
                if choice == 1:
                    data, kind = real[:self.random.randrange(1, len(real))], "truncated"
                elif choice == 2:
                    data, kind = real, "replayed"
                elif choice == 3:
                    b = bytearray(real)
                    for _ in range(self.random.randrange(1, 8)):
                        b[self.random.randrange(len(b))] ^= 1 << self.random.randrange(8)
                    data, kind = bytes(b), "mutated"
                else:
                    data, kind = os.urandom(self.random.randrange(1, 1400)), "garbage"
            try:
                self.sock.sendto(data, self.to)
                self.sent[kind] += 1
            except OSError:
                pass
            try:
                while True:
                    self.sock.recv(65536)  # acks of replays: drained, ignored
            except OSError:
                pass
            time.sleep(0.01)


def spool_db(lab, node):
    return os.path.join(lab.dir, "prober", node, "spool.db")


def query(path, sql):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def produced(lab):
    keys = set()
    for node in lab.nodes:
        path = spool_db(lab, node)
        if os.path.exists(path):
            for epoch, seq in query(path, "SELECT epoch, seq FROM history"):
                keys.add((node, epoch, seq))
    return keys


def spooled(lab):
    total = 0
    for node in lab.nodes:
        path = spool_db(lab, node)
        if os.path.exists(path):
            total += query(path, "SELECT count(*) FROM spool")[0][0]
    return total


def main():
    started = time.monotonic()
    relay_port = [0]
    lab = FaultLab(relay_port)
    collector_port = lab.ports["collector"]
    relay = relay_module.Relay(collector_port, seed=1)
    relay_port[0] = relay.port
    with open(lab.config, "w") as f:
        f.write(lab.config_text())
    keys = {}
    for line in open(lab.config):
        if "key:" in line and "id:" in line:
            node = line.split("id:")[1].split(",")[0].strip()
            keys[node] = bytes.fromhex(line.split("key:")[1].split("}")[0].strip())
    rnd = random.Random(42)
    collector_kills = prober_kills = 0
    attacker = Attacker(collector_port, relay, keys)
    ok = False
    try:
        relay.start()
        lab.start_all()
        api = lab.proxy()
        wait_for(lambda: (lambda ns: len(ns) == NODES and all(n["state"] == "alive" for n in ns))(
            api.node.list()), 30, "every node alive")
        reply = api.probe.request({
            "tool": "latency", "nodes": lab.nodes, "interval": INTERVAL_S,
            "args": {"method": "udp", "count": 1, "spacing_ms": 10, "timeout_ms": 20}})
        request_id = reply["id"]
        log(f"mesh of {reply['paths']} paths every {INTERVAL_S} s; relay on {relay.port}, "
            f"collector on {collector_port}")
        attacker.start()

        def kill_collector(down_s):
            nonlocal collector_kills
            lab.procs["collector"].send_signal(signal.SIGKILL)
            lab.procs.pop("collector").wait()
            collector_kills += 1
            time.sleep(down_s)
            lab.start("collector", [binary("flexmon-collector"), "--config", lab.config])

        def kill_prober():
            nonlocal prober_kills
            node = rnd.choice(lab.nodes)
            name = f"prober-{node}"
            lab.procs[name].send_signal(signal.SIGKILL)
            lab.procs.pop(name).wait()
            prober_kills += 1
            time.sleep(rnd.uniform(0.1, 1.0))
            lab.start(name, [binary("flexmon-prober"), "--config", lab.config, "--node", node])

        # Phase 1: 12 collector kills and 6 prober kills at random moments.
        for i in range(12):
            time.sleep(rnd.uniform(0.5, 3.0))
            kill_collector(rnd.uniform(0.05, 1.5))
            if i % 2 == 0:
                time.sleep(rnd.uniform(0.1, 1.0))
                kill_prober()
        log(f"phase 1: {collector_kills} collector kills, {prober_kills} prober kills, "
            f"{len(produced(lab))} results produced")
        # Phase 2: the collector stays down while probing goes on.
        lab.procs["collector"].send_signal(signal.SIGKILL)
        lab.procs.pop("collector").wait()
        collector_kills += 1
        outage_end = time.monotonic() + OUTAGE_S
        while time.monotonic() < outage_end:
            time.sleep(min(10, max(0, outage_end - time.monotonic())))
        lab.start("collector", [binary("flexmon-collector"), "--config", lab.config])
        log(f"phase 2: collector was down {OUTAGE_S:.0f} s; {spooled(lab)} results spooled, "
            f"{len(produced(lab))} produced")
        # Phase 3: the remaining kills while the backlog drains.
        while collector_kills < COLLECTOR_KILLS or prober_kills < PROBER_KILLS:
            time.sleep(rnd.uniform(0.5, 3.0))
            if collector_kills < COLLECTOR_KILLS:
                kill_collector(rnd.uniform(0.05, 1.5))
            if prober_kills < PROBER_KILLS:
                time.sleep(rnd.uniform(0.1, 1.0))
                kill_prober()
        # Keep probing until enough results were produced (bounded).
        deadline = time.monotonic() + 240
        while len(produced(lab)) < MIN_RESULTS * 1.02 and time.monotonic() < deadline:
            time.sleep(5)
        api.probe.cancel(request_id)
        log(f"phase 3: {collector_kills} collector kills, {prober_kills} prober kills; request "
            "cancelled, draining the spools")
        time.sleep(3)  # measurements in progress finish and are spooled
        wait_for(lambda: spooled(lab) == 0, 180, "every spool to drain")
        attacker.stopping = True
        attacker.join(5)
        relay.stop()
        made = produced(lab)
        rows = query(os.path.join(lab.dir, "cache.db"),
                     "SELECT node, boot_epoch, seq FROM results")
        stored = set(rows)
        same_measurement = query(
            os.path.join(lab.dir, "cache.db"),
            "SELECT count(*) - count(DISTINCT node || '|' || stream || '|' || start_ns) "
            "FROM results")[0][0]
        lost = len(made - stored)
        forged = len(stored - made) + sum(1 for r in rows if r[1] >= FORGED_EPOCH)
        duplicated = (len(rows) - len(stored)) + same_measurement
        log(f"relay: {relay.counts}; attacker: {attacker.sent}; "
            f"{time.monotonic() - started:.0f} s in all")
        if lost:
            log(f"lost, e.g.: {sorted(made - stored)[:10]}")
        print(f"faults: results={len(made)} lost={lost} duplicated={duplicated} "
              f"collector_kills={collector_kills} prober_kills={prober_kills} "
              f"forged_accepted={forged}", flush=True)
        ok = (lost == 0 and duplicated == 0 and forged == 0 and len(made) >= MIN_RESULTS and
              collector_kills >= COLLECTOR_KILLS and prober_kills >= PROBER_KILLS)
        if len(made) < MIN_RESULTS:
            log(f"FAIL: only {len(made)} results produced, fewer than {MIN_RESULTS}")
    finally:
        attacker.stopping = True
        relay.stopping = True
        if not ok:
            for name in ["collector"] + [f"prober-{n}" for n in lab.nodes[:1]]:
                try:
                    print(f"--- tail of {name}.log", flush=True)
                    print("".join(lab.log(name).splitlines(True)[-15:]), flush=True)
                except OSError:
                    pass
        lab.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
