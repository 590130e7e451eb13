"""Starts real flexmon processes on loopback for integration tests.

Everything runs on 127.0.0.0/8 with ports picked at random, in a temporary
folder that is removed afterwards; every wait is bounded."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import xmlrpc.client

BIN = os.environ.get("FLEXMON_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build-test", "bin")


def binary(name):
    path = os.path.join(BIN, name)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: build first (scripts/build) or set FLEXMON_BIN")
    return path


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    """Polls predicate() until it returns a true value, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, xmlrpc.client.Error) as e:
            last_error = e
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def wait_alive(api, nodes, timeout=20):
    """Waits until node.list() shows every node alive; returns the list."""
    def alive():
        listed = api.node.list()
        return listed if len(listed) == nodes and all(n["state"] == "alive" for n in listed) else None
    return wait_for(alive, timeout, f"{nodes} alive nodes")


# The harness's users and their roles.
ROLES = {"admin": "admin", "bob": "user", "carol": "reader", "mesh": "service"}


def hash_token(token):
    """The `token_hash: "..."` config line that `flexmon-manager hash-token` prints."""
    out = subprocess.run([binary("flexmon-manager"), "hash-token"], input=token + "\n",
                         capture_output=True, text=True, timeout=30, check=True).stdout
    if not out.startswith("token_hash: ") or out.count("\n") != 1:
        raise RuntimeError(f"flexmon-manager hash-token printed {out!r}")
    return out.strip()


class FaultAssertions:
    """Mixed into a unittest.TestCase: assertFault(code, call, *args)."""

    def assertFault(self, code, call, *args):
        with self.assertRaises(xmlrpc.client.Fault) as caught:
            call(*args)
        self.assertEqual(caught.exception.faultCode, code, caught.exception.faultString)
        self.assertTrue(caught.exception.faultString)
        return caught.exception.faultString


class Flexmon:
    """A manager, a collector and probers n1..nN on 127.0.0.1..N."""

    def __init__(self, nodes=3):
        self.dir = tempfile.mkdtemp(prefix="flexmon-it-")
        self.ports = {
            "xmlrpc": free_port(),
            "control": free_port(),
            "collector": free_port(socket.SOCK_DGRAM),
            "responder": free_port(socket.SOCK_DGRAM),
        }
        self.nodes = [f"n{i + 1}" for i in range(nodes)]
        # One user of each role (ROLES); the config holds only the tokens'
        # hashes, made by the manager's own hash-token.
        self.tokens = {user: secrets.token_urlsafe(32) for user in ROLES}
        self.token_hashes = {user: hash_token(token) for user, token in self.tokens.items()}
        self.config = os.path.join(self.dir, "flexmon.yaml")
        with open(self.config, "w") as f:
            f.write(self.config_text())
        self.procs = {}

    def config_text(self):
        nodes = "".join(
            f"  - {{id: {n}, site: lab, address: 127.0.0.{i + 1}, key: {secrets.token_hex(32)}}}\n"
            for i, n in enumerate(self.nodes))
        return (
            "data_dir: .\n"
            "manager:\n"
            f"  xmlrpc_listen: 127.0.0.1:{self.ports['xmlrpc']}\n"
            f"  control_listen: 127.0.0.1:{self.ports['control']}\n"
            "  dead_after_s: 10\n"
            "collector:\n"
            f"  listen: 127.0.0.1:{self.ports['collector']}\n"
            "prober:\n"
            f"  responder_port: {self.ports['responder']}\n"
            "  heartbeat_s: 1\n"
            f"nodes:\n{nodes}"
            "users:\n" + "".join(
                f"  - {{name: {user}, {self.token_hashes[user]}, role: {role}}}\n"
                for user, role in ROLES.items()))

    def url(self, user="admin", token=None):
        token = token if token is not None else self.tokens[user]
        return f"http://{user}:{token}@127.0.0.1:{self.ports['xmlrpc']}/RPC2"

    def proxy(self, user="admin", token=None):
        return xmlrpc.client.ServerProxy(self.url(user, token))

    def start(self, name, argv):
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_all(self):
        self.start("collector", [binary("flexmon-collector"), "--config", self.config])
        self.start_manager()
        for node in self.nodes:
            self.start(f"prober-{node}",
                       [binary("flexmon-prober"), "--config", self.config, "--node", node])

    def start_manager(self):
        self.start("manager", [binary("flexmon-manager"), "--config", self.config])
        wait_for(lambda: self.proxy().node.list() is not None, 15, "the manager's API")

    def stop(self, name, timeout=10):
        """SIGTERM, then waits; returns the exit code. Kills after `timeout`."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name} did not stop within {timeout} s of SIGTERM")

    def log(self, name):
        with open(os.path.join(self.dir, f"{name}.log"), errors="replace") as f:
            return f.read()

    def close(self):
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.kill()
            proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
