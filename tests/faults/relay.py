"""A lossy UDP relay on loopback between probers and the collector: drops a
share of datagrams at random (both directions), duplicates and reorders
others, and keeps a sample of real result datagrams for replay attacks."""

import random
import selectors
import socket
import threading
import time


class Relay:
    def __init__(self, collector_port, drop=0.2, duplicate=0.1, reorder=0.1, seed=None):
        self.collector = ("127.0.0.1", collector_port)
        self.drop, self.duplicate, self.reorder = drop, duplicate, reorder
        self.random = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.upstream = {}  # prober address -> socket towards the collector
        self.downstream = {}  # socket fileno -> prober address
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.front, selectors.EVENT_READ)
        self.held = []  # (release time, socket, datagram, address): reordered
        self.captured = []  # real result datagrams, for replays and mutations
        self.counts = {"in": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(5)

    def forward(self, sock, data, to):
        self.counts["in"] += 1
        r = self.random.random()
        if r < self.drop:
            self.counts["dropped"] += 1
            return
        if r < self.drop + self.reorder:
            self.counts["reordered"] += 1
            self.held.append((time.monotonic() + self.random.uniform(0.01, 0.3), sock, data, to))
            return
        copies = 2 if r < self.drop + self.reorder + self.duplicate else 1
        if copies == 2:
            self.counts["duplicated"] += 1
        for _ in range(copies):
            try:
                sock.sendto(data, to)
            except OSError:
                pass  # e.g. ECONNREFUSED from an earlier send while the collector was down

    def run(self):
        while not self.stopping:
            for key, _ in self.selector.select(0.01):
                sock = key.fileobj
                try:
                    data, source = sock.recvfrom(65536)
                except OSError:
                    continue
                if sock is self.front:
                    up = self.upstream.get(source)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind(("127.0.0.1", 0))
                        self.upstream[source] = up
                        self.downstream[up.fileno()] = source
                        self.selector.register(up, selectors.EVENT_READ)
                    if len(self.captured) < 2000 or self.random.random() < 0.01:
                        if len(self.captured) >= 2000:
                            self.captured[self.random.randrange(2000)] = data
                        else:
                            self.captured.append(data)
                    self.forward(up, data, self.collector)
                else:
                    self.forward(self.front, data, self.downstream[sock.fileno()])
            now = time.monotonic()
            due = [h for h in self.held if h[0] <= now]
            if due:
                self.held = [h for h in self.held if h[0] > now]
                for _, sock, data, to in due:
                    try:
                        sock.sendto(data, to)
                    except OSError:
                        pass
