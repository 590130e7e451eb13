"""flexmon network lab: emulated hosts and links on one machine (needs root).

Each host is a network namespace; each link joins two hosts with a chosen
rate (tc tbf), random loss (nftables numgen), delay and jitter (the user-space
relay flexmon-netlab-relay between two TUN devices). Links without delay and
jitter are plain veth pairs unless `relay=1` is given.

Python use (standard library only):

    from netlab import Lab
    with Lab(links=["a-b:rate=20mbit,delay=10ms,jitter=1ms,loss=1"]) as lab:
        srv = lab.popen("b", ["iperf3", "-s", "-1"])
        r = lab.exec("a", ["iperf3", "-c", lab.address("b", "a"), "-t", "2"])
        rtts = lab.ping("a", lab.address("b", "a"), count=50)

Everything the lab creates carries the prefix `fxl<id>-` and is removed when
the context exits (also on exceptions, Ctrl-C, SIGTERM and SIGHUP; a lab
brought up without `with` goes when the process exits). Labs whose
owner process died are removed by `netlab cleanup` and by the next Lab().
See README.md for the link syntax and measured accuracy.
"""

from __future__ import annotations

import atexit
import dataclasses
import glob
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Iterable, Optional, Sequence, Union

PREFIX = "fxl"
STATE_DIR = "/run/flexmon-netlab"
RELAY_NAME = "flexmon-netlab-relay"
UDPGEN_NAME = "flexmon-netlab-udpgen"
_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
_HOST_RE = re.compile(r"^[a-z][a-z0-9_]{0,11}$")
_EPHEMERAL_RE = re.compile(r"^fxl(\d+)n\d+-")
_counter = 0


class NetlabError(RuntimeError):
    pass


# ---------------------------------------------------------------- parsing

_RATE_UNITS = {"": 1, "bit": 1, "bps": 1, "k": 1e3, "kbit": 1e3, "m": 1e6, "mbit": 1e6,
               "g": 1e9, "gbit": 1e9}
_TIME_UNITS = {"ns": 1e-3, "us": 1, "ms": 1e3, "s": 1e6}


def parse_rate(text: str) -> float:
    """'20mbit' -> 2e7 bit/s. Units: bit, kbit, mbit, gbit (k, m, g)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _RATE_UNITS:
        raise NetlabError(f"bad rate {text!r} (e.g. 20mbit, 500kbit)")
    return float(m.group(1)) * _RATE_UNITS[m.group(2).lower()]


def parse_time_us(text: str) -> float:
    """'10ms' -> 10000.0 microseconds. Units: ns, us, ms, s; a bare number is ms."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-z]*)\s*", str(text))
    if not m or (m.group(2) and m.group(2) not in _TIME_UNITS):
        raise NetlabError(f"bad time {text!r} (e.g. 10ms, 250us)")
    return float(m.group(1)) * _TIME_UNITS[m.group(2) or "ms"]


def _parse_bool(text: str) -> bool:
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise NetlabError(f"bad boolean {text!r}")


@dataclasses.dataclass
class Link:
    """One link between hosts a and b. *_ab applies to packets from a to b."""
    a: str
    b: str
    rate_ab: Optional[float] = None  # bit/s, None = unlimited
    rate_ba: Optional[float] = None
    delay_ab_us: float = 0.0  # one-way
    delay_ba_us: float = 0.0
    jitter_ab_us: float = 0.0
    jitter_ba_us: float = 0.0
    loss_ab: float = 0.0  # percent, fractional allowed (ppm resolution)
    loss_ba: float = 0.0
    dist: str = "uniform"  # jitter distribution: uniform U(-J,J) or normal N(0,J)
    relay: Optional[bool] = None  # None: relay only when delay/jitter is set
    mtu: int = 1500
    queue_ms: float = 50.0  # tbf queue length, as time at the link rate
    burst: Optional[int] = None  # tbf bucket in bytes; None = two full-size frames
    cross_ab: Optional[float] = None  # constant-rate UDP cross traffic, bit/s
    cross_ba: Optional[float] = None
    cross_size: int = 1000  # IP packet size of cross traffic
    seed: Optional[int] = None  # relay RNG seed, default lab seed + link index

    @property
    def uses_relay(self) -> bool:
        if self.relay is not None:
            return self.relay
        return any((self.delay_ab_us, self.delay_ba_us, self.jitter_ab_us, self.jitter_ba_us))


def parse_link(text: Union[str, Link]) -> Link:
    """'a-b:rate=20mbit,delay=10ms,jitter=1ms,loss=1' -> Link.

    Keys (each also as key_ab / key_ba for one direction): rate, delay,
    jitter, loss (percent), cross (UDP cross traffic rate; `cross` alone is
    a->b). Others: dist=uniform|normal, relay=0|1, mtu=N, queue=TIME,
    burst=BYTES, cross_size=BYTES, seed=N.
    """
    if isinstance(text, Link):
        return text
    head, _, opts = str(text).partition(":")
    ends = head.strip().split("-")
    if len(ends) != 2 or not all(_HOST_RE.match(h) for h in ends) or ends[0] == ends[1]:
        raise NetlabError(f"bad link {head!r}: want HOST-HOST, hosts [a-z][a-z0-9_]{{0,11}}")
    link = Link(a=ends[0], b=ends[1])
    for item in filter(None, (s.strip() for s in opts.split(","))):
        key, eq, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not eq:
            raise NetlabError(f"bad option {item!r} in {text!r}: want key=value")
        base, _, direction = key.rpartition("_") if key.endswith(("_ab", "_ba")) else (key, "", "")
        dirs = [direction] if direction else ["ab", "ba"]
        if base == "rate":
            for d in dirs:
                setattr(link, f"rate_{d}", parse_rate(val))
        elif base in ("delay", "jitter"):
            for d in dirs:
                setattr(link, f"{base}_{d}_us", parse_time_us(val))
        elif base == "loss":
            pct = float(val.rstrip("%"))
            if not 0 <= pct <= 100:
                raise NetlabError(f"loss {val} not in [0, 100]")
            for d in dirs:
                setattr(link, f"loss_{d}", pct)
        elif base == "cross":
            setattr(link, f"cross_{direction or 'ab'}", parse_rate(val))
        elif key == "dist":
            if val not in ("uniform", "normal"):
                raise NetlabError("dist must be uniform or normal")
            link.dist = val
        elif key == "relay":
            link.relay = _parse_bool(val)
        elif key == "mtu":
            link.mtu = int(val)
        elif key == "queue":
            link.queue_ms = parse_time_us(val) / 1e3
        elif key == "burst":
            link.burst = int(val)
        elif key == "cross_size":
            link.cross_size = int(val)
        elif key == "seed":
            link.seed = int(val)
        else:
            raise NetlabError(f"unknown link option {key!r}")
    if not 576 <= link.mtu <= 9000:
        raise NetlabError("mtu must be in [576, 9000]")
    if link.burst is not None and link.burst < link.mtu + 14:
        raise NetlabError(f"burst {link.burst} is below one frame ({link.mtu + 14} bytes)")
    return link


def _yaml_scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def load_spec(path: str) -> dict:
    """Reads a lab spec: JSON, or this YAML subset:

        seed: 7            # optional
        links:
          - a-b:rate=20mbit,delay=10ms
          - b-c: delay=5ms,loss=0.5
          - link: c-d
            rate: 10mbit
            jitter: 1ms
    Returns {"links": [Link...], "seed": int}.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = _parse_yaml_subset(text, path)
    links = []
    for item in doc.get("links", []):
        if isinstance(item, str):
            links.append(parse_link(item))
            continue
        item = dict(item)
        name = item.pop("link", None)
        if name is None:  # {"a-b": "delay=5ms"}
            keys = [k for k in item if "-" in k]
            if len(keys) != 1:
                raise NetlabError(f"{path}: link item without 'link:' key: {item}")
            name = keys[0]
            extra = item.pop(name) or ""
            opts = [extra] if extra else []
        else:
            opts = []
        opts += [f"{k}={v}" for k, v in item.items()]
        links.append(parse_link(f"{name}:{','.join(opts)}"))
    return {"links": links, "seed": int(doc.get("seed", 1))}


def _parse_yaml_subset(text: str, path: str) -> dict:
    doc: dict = {}
    cur_list: Optional[list] = None
    cur_map: Optional[dict] = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if indent == 0:
            key, _, val = body.partition(":")
            if val.strip():
                doc[key.strip()] = _yaml_scalar(val)
                cur_list = None
            else:
                cur_list = doc.setdefault(key.strip(), [])
            cur_map = None
        elif body.startswith("- ") and cur_list is not None:
            item = body[2:].strip()
            m = re.match(r"^([^:'\"]+):(\s+(.*))?$", item)
            if m:
                cur_map = {m.group(1).strip(): _yaml_scalar(m.group(3) or "")}
                cur_list.append(cur_map)
            else:
                cur_list.append(_yaml_scalar(item))
                cur_map = None
        elif cur_map is not None and ":" in body:
            key, _, val = body.partition(":")
            cur_map[key.strip()] = _yaml_scalar(val)
        else:
            raise NetlabError(f"{path}:{lineno}: unsupported YAML: {raw!r}")
    return doc


# ---------------------------------------------------------------- helpers

def find_binary(name: str) -> str:
    """Finds a lab tool: $FLEXMON_NETLAB_RELAY / $FLEXMON_NETLAB_UDPGEN, then
    build*/bin/ or build*/tests/netlab/ under the repo, then /tmp/netlab-build,
    then PATH."""
    env = os.environ.get("FLEXMON_NETLAB_" + name.rsplit("-", 1)[-1].upper())
    if env:
        if os.access(env, os.X_OK):
            return env
        raise NetlabError(f"{env} (from environment) is not executable")
    candidates = sorted(glob.glob(os.path.join(_REPO, "build*", "bin", name)) +
                        glob.glob(os.path.join(_REPO, "build*", "tests", "netlab", name)),
                        key=lambda p: -os.path.getmtime(p))
    candidates += [os.path.join("/tmp/netlab-build", name)]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    found = shutil.which(name)
    if found:
        return found
    raise NetlabError(f"{name} not found: build it (cmake -S tests/netlab -B /tmp/netlab-build "
                      f"&& cmake --build /tmp/netlab-build) or set FLEXMON_NETLAB_"
                      f"{name.rsplit('-', 1)[-1].upper()}")


def _sh(argv: Sequence[str], input: Optional[str] = None, check: bool = True,
        timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise NetlabError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def unavailable_reason() -> Optional[str]:
    """Why a lab cannot run here (None if it can)."""
    if os.geteuid() != 0:
        return "netlab needs root (network namespaces, TUN, tc, nft)"
    for tool in ("ip", "tc", "nft"):
        if not shutil.which(tool):
            return f"'{tool}' not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing"
    try:
        _sh(["ip", "netns", "list"], timeout=10)
    except (NetlabError, OSError, subprocess.SubprocessError) as e:
        return f"'ip netns' unavailable: {e}"
    return None


def _proc_start_time(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill_pids(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM, wait (bounded), then SIGKILL."""
    pids = [p for p in set(pids) if p > 1 and p != os.getpid()]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        for p in alive:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        alive = [p for p in alive if os.path.exists(f"/proc/{p}") and _proc_state(p) != "Z"]
    for p in alive:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def list_namespaces() -> list:
    r = _sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------- cleanup

def _teardown(lab_id: str, namespaces: Iterable[str], pids: Iterable[int]) -> None:
    """Removes one lab: its processes (verified by command line), every process
    inside its namespaces, then the namespaces (which takes devices, qdiscs and
    nft tables with them), then its state."""
    tag = f"{PREFIX}{lab_id}-"
    victims = [p for p in pids if tag in _pid_cmdline(p)]
    # Relays and generators of this lab that the state file may not list.
    for d in glob.glob("/proc/[0-9]*"):
        pid = int(d[6:])
        cmd = _pid_cmdline(pid)
        if (RELAY_NAME in cmd or UDPGEN_NAME in cmd) and tag in cmd:
            victims.append(pid)
    for ns in namespaces:
        if ns.startswith(tag):
            r = _sh(["ip", "netns", "pids", ns], check=False)
            victims += [int(x) for x in r.stdout.split() if x.isdigit()]
    _kill_pids(victims)
    for ns in namespaces:
        if ns.startswith(tag):
            _sh(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(os.path.join(STATE_DIR, lab_id), ignore_errors=True)


def _lab_state(lab_id: str) -> Optional[dict]:
    try:
        with open(os.path.join(STATE_DIR, lab_id, "state.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _owner_alive(state: dict) -> bool:
    pid, start = state.get("owner_pid"), state.get("owner_start")
    if pid is None:  # persistent lab (netlab up)
        return True
    return _proc_start_time(pid) == start


def cleanup(all_labs: bool = False, lab_id: Optional[str] = None, verbose: bool = False) -> list:
    """Removes stale labs (owner process gone), or every lab with all_labs,
    or just `lab_id`. Returns the removed lab ids."""
    ids = set()
    if os.path.isdir(STATE_DIR):
        ids.update(os.listdir(STATE_DIR))
    by_lab: dict = {}
    for ns in list_namespaces():
        m = re.match(r"^fxl([a-z0-9]+)-", ns)
        if m:
            by_lab.setdefault(m.group(1), []).append(ns)
            ids.add(m.group(1))
    removed = []
    for lid in sorted(ids):
        if lab_id is not None and lid != lab_id:
            continue
        state = _lab_state(lid)
        if lab_id is None and not all_labs:
            if state is not None and _owner_alive(state):
                continue
            if state is None:  # namespaces without state: stale only if the owner pid is gone
                m = _EPHEMERAL_RE.match(f"fxl{lid}-")
                if not m or _proc_start_time(int(m.group(1))) is not None:
                    continue
        pids = (state or {}).get("pids", [])
        namespaces = set(by_lab.get(lid, [])) | set((state or {}).get("namespaces", []))
        _teardown(lid, sorted(namespaces), pids)
        removed.append(lid)
        if verbose:
            print(f"removed lab {lid}", file=sys.stderr)
    return removed


# ---------------------------------------------------------------- termination

_TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_live_labs: "weakref.WeakSet" = weakref.WeakSet()  # ephemeral labs up in this process
_terminating = False


def _exit_on_signal(signum, _frame) -> None:
    global _terminating
    if _terminating:  # a second signal must not cut short the teardown the first started
        return
    _terminating = True
    raise SystemExit(128 + signum)


def _unwind_on_termination() -> None:
    """SIGTERM and SIGHUP end a Python process without running `finally`
    blocks, `with` exits or atexit handlers, which would leave a lab's
    namespaces behind (its relays die with it, the namespaces do not). Turn
    them into SystemExit, as Ctrl-C is turned into KeyboardInterrupt, so the
    lab is torn down. Only where the signal still has its default action
    (a program's own handler is left alone) and only from the main thread
    (the only one Python lets set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in _TERMINATING_SIGNALS:
        if signal.getsignal(s) == signal.SIG_DFL:
            signal.signal(s, _exit_on_signal)


def _down_live_labs() -> None:
    """At interpreter exit: labs brought up without `with` and still up."""
    for lab in list(_live_labs):
        lab.down()


atexit.register(_down_live_labs)


# ---------------------------------------------------------------- the lab

class Lab:
    """A set of hosts (network namespaces) joined by emulated links.

    links: link specs ("a-b:rate=20mbit,delay=10ms") or Link objects.
    name: None for a lab owned by this process (id fxl<pid>n<k>); a name
      ([a-z][a-z0-9]{0,15}) makes a persistent lab that outlives the process
      (netlab up/down).
    seed: base seed for the relays' jitter RNG.
    cross_duration: upper bound (s) on cross-traffic generators' lifetime.
    realtime: SCHED_FIFO priority for relays and cross-traffic generators
      (0 = normal scheduling). They are the ground truth: on a loaded host
      an ordinary process wakes milliseconds late, which would turn delay
      into delay + noise and constant-rate traffic into bursts.
    truth: relays log each ICMP echo's applied delay (echo_truth()).
    relay_cpu: run every relay of the lab on this one CPU (None = wherever
      the scheduler puts them; best effort, a refusal is logged). For
      comparing links with each other: the far host's echo runs inside the
      relay's write, and its cost follows the state of the relay's CPU (its
      median 28 us on one vCPU and 57 us on the other, seen on a loaded
      host), so links whose relays share a CPU see the same. Only for links used one at a time: two
      busy relays on one CPU at the same SCHED_FIFO priority wait for each
      other's release busy-wait.
    """

    def __init__(self, links: Sequence[Union[str, Link]], name: Optional[str] = None,
                 seed: int = 1, cross_duration: float = 3600.0, relay_args: Sequence[str] = (),
                 realtime: int = 10, truth: bool = False, relay_cpu: Optional[int] = None):
        global _counter
        self.links = [parse_link(x) for x in links]
        if not self.links:
            raise NetlabError("a lab needs at least one link")
        if len(self.links) > 255 * 100:
            raise NetlabError("too many links")
        self.hosts: list = []
        for link in self.links:
            for h in (link.a, link.b):
                if h not in self.hosts:
                    self.hosts.append(h)
        if name is not None:
            if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", name):
                raise NetlabError("lab name must match [a-z][a-z0-9]{0,15}")
            self.id = name
        else:
            self.id = f"{os.getpid()}n{_counter}"
            _counter += 1
        self.persistent = name is not None
        self.seed = seed
        self.cross_duration = cross_duration
        self.relay_args = list(relay_args)
        self.realtime = realtime
        self.truth = truth
        self.relay_cpu = relay_cpu
        self._procs: list = []  # Popen objects we own
        self._up = False
        self.state_dir = os.path.join(STATE_DIR, self.id)

    # -- naming

    def netns(self, host: str) -> str:
        """Name of the network namespace of `host`."""
        if host not in self.hosts:
            raise NetlabError(f"unknown host {host!r}")
        return f"{PREFIX}{self.id}-{host}"

    def _link_index(self, host: str, peer: str) -> int:
        for i, link in enumerate(self.links):
            if (link.a, link.b) in ((host, peer), (peer, host)):
                return i
        raise NetlabError(f"no link between {host!r} and {peer!r}")

    @staticmethod
    def _subnet(i: int) -> str:
        return f"10.{77 + i // 256}.{i % 256}"

    def _addr_on(self, i: int, host: str) -> str:
        return f"{self._subnet(i)}.{1 if self.links[i].a == host else 2}"

    def address(self, host: str, peer: str) -> str:
        """IPv4 address of `host` on its (first) link to `peer`. Reachable from
        every host of the lab (static routes along shortest paths)."""
        return self._addr_on(self._link_index(host, peer), host)

    def device(self, host: str, peer: str) -> str:
        """Interface name inside `host` for its (first) link to `peer`."""
        return f"fx{self._link_index(host, peer)}"

    def env(self) -> dict:
        """NETLAB_* variables describing the lab (for shell benchmarks)."""
        e = {"NETLAB_LAB": self.id, "NETLAB_HOSTS": " ".join(self.hosts)}
        for h in self.hosts:
            e[f"NETLAB_NS_{h.upper()}"] = self.netns(h)
        for link in self.links:
            for h, p in ((link.a, link.b), (link.b, link.a)):
                e.setdefault(f"NETLAB_ADDR_{h.upper()}_{p.upper()}", self.address(h, p))
        return e

    # -- running things inside hosts

    def _ns_argv(self, host: str, argv: Sequence[str]) -> list:
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def exec(self, host: str, argv: Sequence[str], timeout: Optional[float] = 120,
             check: bool = False, **kw) -> subprocess.CompletedProcess:
        """Runs argv inside `host`, waits (bounded by timeout) and returns the
        CompletedProcess (stdout/stderr captured as text unless overridden)."""
        kw.setdefault("capture_output", "stdout" not in kw and "stderr" not in kw)
        kw.setdefault("text", True)
        return subprocess.run(self._ns_argv(host, argv), timeout=timeout, check=check, **kw)

    def popen(self, host: str, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Starts argv inside `host`; the process is killed when the lab goes down."""
        p = subprocess.Popen(self._ns_argv(host, argv), **kw)
        self._procs.append(p)
        self._save_state()
        return p

    def ping(self, host: str, addr: str, count: int = 100, interval: float = 0.01,
             size: int = 56, timeout: float = 2.0) -> list:
        """ICMP echo from `host` to `addr`; returns RTTs in ms (None = lost).
        Receive times are kernel timestamps (SO_TIMESTAMPNS)."""
        r = self.exec(host, [sys.executable, os.path.abspath(__file__), "_ping", addr, str(count),
                             str(interval), str(size), str(timeout)],
                      timeout=count * interval + timeout + 30)
        if r.returncode != 0:
            raise NetlabError(f"ping failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def relay_log(self, a: str, b: str) -> str:
        """The relay's stderr so far (statistics lines appear on exit/SIGUSR1)."""
        try:
            with open(os.path.join(self.state_dir, f"relay{self._link_index(a, b)}.log")) as f:
                return f.read()
        except OSError:
            return ""

    def echo_truth(self, a: str, b: str, offset: int = 0) -> tuple:
        """The relay's applied round-trip delay of each ICMP echo on link a-b
        whose request and reply it has released since byte `offset` of its
        truth log (Lab(truth=True)). Returns ({(icmp id, seq): ns}, new offset):
        jitter and the relay's own release lateness included, the kernel's
        and the tools' own time excluded."""
        path = os.path.join(self.state_dir, f"truth{self._link_index(a, b)}.log")
        held: dict = {}
        with open(path) as f:
            f.seek(offset)
            text = f.read()
        end = text.rfind("\n") + 1  # a line being written is read next time
        for line in text[:end].splitlines():
            direction, kind, ident, seq, ns = line.split()
            held.setdefault((int(ident), int(seq)), {})[(direction, kind)] = int(ns)
        rtt = {}
        for key, parts in held.items():
            for req, rep in ((("ab", "8"), ("ba", "0")), (("ba", "8"), ("ab", "0"))):
                if req in parts and rep in parts:
                    rtt[key] = parts[req] + parts[rep]
        return rtt, offset + len(text[:end].encode())

    # -- life cycle

    def __enter__(self) -> "Lab":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def _save_state(self) -> None:
        state = {
            "id": self.id,
            "owner_pid": None if self.persistent else os.getpid(),
            "owner_start": None if self.persistent else _proc_start_time(os.getpid()),
            "namespaces": [self.netns(h) for h in self.hosts],
            "pids": [p.pid for p in self._procs],
            "links": [dataclasses.asdict(x) for x in self.links],
            "seed": self.seed,
            "env": self.env(),
        }
        tmp = os.path.join(self.state_dir, "state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, os.path.join(self.state_dir, "state.json"))

    def up(self) -> "Lab":
        reason = unavailable_reason()
        if reason:
            raise NetlabError(reason)
        cleanup()  # stale labs of dead owners only
        if os.path.exists(os.path.join(self.state_dir, "state.json")):
            raise NetlabError(f"lab {self.id} already exists (netlab down --name {self.id})")
        relay_bin = find_binary(RELAY_NAME) if any(x.uses_relay for x in self.links) else None
        udpgen_bin = (find_binary(UDPGEN_NAME)
                      if any(x.cross_ab or x.cross_ba for x in self.links) else None)
        if not self.persistent:
            _unwind_on_termination()
            _live_labs.add(self)
        os.makedirs(self.state_dir, exist_ok=True)
        self._save_state()  # before creating anything, so cleanup can find it
        self._up = True
        try:
            self._build(relay_bin, udpgen_bin)
        except BaseException:
            self.down()
            raise
        return self

    def _build(self, relay_bin: Optional[str], udpgen_bin: Optional[str]) -> None:
        sysctls = {
            "net/ipv6/conf/all/disable_ipv6": 1,  # no DAD, no router solicitations
            "net/ipv6/conf/default/disable_ipv6": 1,
            "net/ipv4/ip_forward": 1,
            "net/ipv4/conf/all/rp_filter": 0,
            "net/ipv4/conf/default/rp_filter": 0,
            "net/ipv4/conf/all/send_redirects": 0,
            "net/ipv4/conf/default/send_redirects": 0,
            "net/ipv4/icmp_ratelimit": 0,
        }
        script = "; ".join(f"echo {v} > /proc/sys/{k}" for k, v in sysctls.items())
        for h in self.hosts:
            ns = self.netns(h)
            _sh(["ip", "netns", "add", ns])
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            _sh(["ip", "netns", "exec", ns, "sh", "-ec", script])

        for i, link in enumerate(self.links):
            dev = f"fx{i}"
            na, nb = self.netns(link.a), self.netns(link.b)
            if link.uses_relay:
                for ns in (na, nb):
                    _sh(["ip", "-n", ns, "tuntap", "add", "dev", dev, "mode", "tun"])
            else:
                _sh(["ip", "link", "add", dev, "netns", na, "type", "veth", "peer", "name", dev,
                     "netns", nb])
            for ns, host, peer in ((na, link.a, link.b), (nb, link.b, link.a)):
                _sh(["ip", "-n", ns, "link", "set", dev, "mtu", str(link.mtu), "txqueuelen",
                     "1000", "up"])
                _sh(["ip", "-n", ns, "addr", "add", f"{self.address(host, peer)}/30", "dev", dev])
            for ns, rate in ((na, link.rate_ab), (nb, link.rate_ba)):
                if rate:
                    self._add_tbf(ns, dev, rate, link)

        self._add_routes()
        self._add_nft()

        for i, link in enumerate(self.links):
            if link.uses_relay:
                self._start_relay(relay_bin, i, link)
        self._save_state()
        for i, link in enumerate(self.links):
            for src, dst, rate in ((link.a, link.b, link.cross_ab), (link.b, link.a, link.cross_ba)):
                if rate:
                    argv = [udpgen_bin, "--dst", self.address(dst, src), "--port", "9", "--rate",
                            f"{rate:.0f}", "--size", str(link.cross_size), "--duration",
                            str(self.cross_duration)]
                    if self.realtime:
                        argv += ["--rt", str(self.realtime)]
                    if not self.persistent:
                        argv.append("--die-with-parent")
                    log = open(os.path.join(self.state_dir, f"udpgen{i}{src}.log"), "w")
                    self.popen(src, argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                               start_new_session=True)
                    log.close()

    @staticmethod
    def _add_tbf(ns: str, dev: str, rate: float, link: Link) -> None:
        # A real bottleneck serializes at its rate and lets no burst through.
        # The bucket holds two full-size frames (Ethernet header included):
        # one frame would lose capacity whenever tbf's timer fires late, and
        # a bigger bucket lets a short train pass faster than the rate, which
        # makes packet-train estimators (and TCP slow start) see a faster link.
        frame = link.mtu + 14
        burst = link.burst or 2 * frame
        limit = int(max(16 * frame, rate / 8 * link.queue_ms / 1e3 + burst))
        _sh(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate",
             f"{rate:.0f}bit", "burst", str(burst), "limit", str(limit)])

    def _add_routes(self) -> None:
        # BFS from every host; route every non-local link subnet via the first hop.
        adj: dict = {h: [] for h in self.hosts}
        for i, link in enumerate(self.links):
            adj[link.a].append((link.b, i))
            adj[link.b].append((link.a, i))
        for h in self.hosts:
            first_hop = {h: None}  # host -> (peer, link index) of the first hop from h
            order = [h]
            for cur in order:  # bounded: each host enters once
                for nxt, i in adj[cur]:
                    if nxt not in first_hop:
                        first_hop[nxt] = first_hop[cur] or (nxt, i)
                        order.append(nxt)
            local = {i for _, i in adj[h]}
            for j, link in enumerate(self.links):
                ends = [e for e in (link.a, link.b) if e in first_hop]
                if j in local or not ends:
                    continue  # attached here, or in another component
                near = min(ends, key=order.index)  # BFS order = hop distance
                peer, i = first_hop[near]
                _sh(["ip", "-n", self.netns(h), "route", "add", f"{self._subnet(j)}.0/30",
                     "via", self._addr_on(i, peer), "dev", f"fx{i}"])

    def _add_nft(self) -> None:
        rules: dict = {h: [] for h in self.hosts}
        for i, link in enumerate(self.links):
            for dst, loss in ((link.b, link.loss_ab), (link.a, link.loss_ba)):
                if loss > 0:
                    ppm = int(round(loss * 10000))
                    rules[dst].append(f'iifname "fx{i}" numgen random mod 1000000 < {ppm} drop')
        for h in self.hosts:
            ruleset = (
                "table inet fxl {\n"
                "  chain loss { type filter hook prerouting priority -300; policy accept;\n"
                + "".join(f"    {r}\n" for r in rules[h]) +
                "  }\n"
                "  chain sink { type filter hook input priority 0; policy accept;\n"
                "    udp dport 9 drop\n"  # cross traffic ends here, silently
                "  }\n"
                "}\n")
            _sh(["ip", "netns", "exec", self.netns(h), "nft", "-f", "-"], input=ruleset)

    def _start_relay(self, relay_bin: str, i: int, link: Link) -> None:
        us = lambda v: f"{v:.3f}us"  # noqa: E731
        argv = [relay_bin, "--lab", f"{PREFIX}{self.id}-link{i}",
                "--a", f"{self.netns(link.a)}:fx{i}", "--b", f"{self.netns(link.b)}:fx{i}",
                "--delay-ab", us(link.delay_ab_us), "--delay-ba", us(link.delay_ba_us),
                "--jitter-ab", us(link.jitter_ab_us), "--jitter-ba", us(link.jitter_ba_us),
                "--dist", link.dist, "--seed", str(link.seed if link.seed is not None
                                                   else self.seed + i),
                "--slot", str(max(2048, link.mtu + 64))]
        if self.realtime:
            argv += ["--rt", str(self.realtime)]
        if self.relay_cpu is not None:
            argv += ["--cpu", str(self.relay_cpu)]
        if self.truth:
            argv += ["--truth", os.path.join(self.state_dir, f"truth{i}.log")]
        argv += self.relay_args
        if not self.persistent:
            argv.append("--die-with-parent")
        log = open(os.path.join(self.state_dir, f"relay{i}.log"), "w")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                             start_new_session=True)
        log.close()
        self._procs.append(p)
        self._save_state()
        ready, _, _ = select.select([p.stdout], [], [], 10)
        line = p.stdout.readline().decode().strip() if ready else ""
        p.stdout.close()
        if line != "ready":
            raise NetlabError(f"relay for link {i} did not start: {self.relay_log(link.a, link.b)}")

    def down(self) -> None:
        """Removes everything the lab created. Safe to call more than once."""
        if not self._up and not os.path.exists(self.state_dir):
            return
        self._up = False
        _live_labs.discard(self)
        pids = [p.pid for p in self._procs]
        _teardown(self.id, [self.netns(h) for h in self.hosts], pids)
        for p in self._procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self._procs = []


def attach(name: str) -> Lab:
    """A Lab object for a persistent lab brought up earlier (netlab up --name)."""
    state = _lab_state(name)
    if state is None:
        raise NetlabError(f"no lab named {name!r} (netlab list)")
    lab = Lab([Link(**x) for x in state["links"]], name=name, seed=state["seed"])
    lab._up = True
    return lab


# ---------------------------------------------------------------- ping

def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def icmp_ping(addr: str, count: int, interval: float, size: int = 56,
              timeout: float = 2.0) -> list:
    """Sends `count` ICMP echo requests every `interval` s; RTTs in ms, None if
    no reply within `timeout` s after the last send. Needs CAP_NET_RAW."""
    so_timestampns = getattr(socket, "SO_TIMESTAMPNS", 35)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.setblocking(False)
    ident = os.getpid() & 0xFFFF
    payload = bytes(size)
    sent = [None] * count
    rtt = [None] * count
    start = time.monotonic()
    last_send = start + (count - 1) * interval
    end = last_send + timeout

    def receive(until: float) -> None:
        while True:
            left = until - time.monotonic()
            r, _, _ = select.select([s], [], [], max(0.0, left))
            if not r:
                return
            while True:
                try:
                    data, anc, _, _ = s.recvmsg(65536, 256)
                except BlockingIOError:
                    break
                ihl = (data[0] & 0x0F) * 4
                if len(data) < ihl + 8:
                    continue
                typ, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if typ != 0 or rid != ident or seq >= count or sent[seq] is None:
                    continue
                t_rx = None
                for level, kind, val in anc:
                    if level == socket.SOL_SOCKET and kind == so_timestampns:
                        sec, nsec = struct.unpack("qq", val[:16])
                        t_rx = sec * 1_000_000_000 + nsec
                if t_rx is None:
                    t_rx = time.time_ns()
                if rtt[seq] is None:
                    rtt[seq] = (t_rx - sent[seq]) / 1e6

    for seq in range(count):
        receive(start + seq * interval)
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, _icmp_checksum(hdr + payload), ident, seq) + payload
        sent[seq] = time.time_ns()  # same clock as SO_TIMESTAMPNS (CLOCK_REALTIME)
        try:
            s.sendto(pkt, (addr, 0))
        except OSError:
            sent[seq] = None
    while time.monotonic() < end and any(r is None for r, t in zip(rtt, sent) if t is not None):
        receive(min(end, time.monotonic() + 0.05))
    s.close()
    return rtt


def summarize(rtts: Sequence[Optional[float]]) -> dict:
    got = sorted(x for x in rtts if x is not None)
    if not got:
        return {"sent": len(rtts), "received": 0}
    return {"sent": len(rtts), "received": len(got), "loss_pct": 100 * (1 - len(got) / len(rtts)),
            "min": got[0], "median": statistics.median(got),
            "p90": got[min(len(got) - 1, int(len(got) * 0.9))], "max": got[-1],
            "stdev": statistics.pstdev(got)}


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "_ping":
    # Internal: run inside a namespace by Lab.ping().
    print(json.dumps(icmp_ping(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]),
                               int(sys.argv[5]), float(sys.argv[6]))))
