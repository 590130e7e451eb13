"""Hashed tokens and roles against the real manager, with Python's xmlrpc.client.

The harness's config holds only hashes that `flexmon-manager hash-token`
made; here also one from `hash-token --generate`, and configs that the
manager must refuse (a token in clear, a malformed hash)."""

import os
import subprocess
import sys
import unittest
import xmlrpc.client

sys.path.insert(0, os.path.dirname(__file__))
from flexmon_harness import Flexmon, FaultAssertions, binary  # noqa: E402

NOT_AUTHENTICATED = 4010
NOT_PERMITTED = 4030
CONFIG_ERROR_EXIT = 78
MESH = {"tool": "latency", "nodes": ["n1", "n2"], "interval": 10}


def generate():
    """(token, config line) from `flexmon-manager hash-token --generate`."""
    out = subprocess.run([binary("flexmon-manager"), "hash-token", "--generate"],
                         capture_output=True, text=True, timeout=30, check=True)
    token_line, hash_line = out.stdout.splitlines()
    assert token_line.startswith("token: "), out.stdout
    return token_line[len("token: "):], hash_line


class AuthLab(Flexmon):
    def __init__(self):
        self.generated, self.generated_line = generate()
        super().__init__(nodes=2)

    def config_text(self):
        # The harness's config ends with its users: one more, made by --generate.
        return super().config_text() + f"  - {{name: gen, {self.generated_line}, role: user}}\n"


class HashedTokensAndRoles(FaultAssertions, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = AuthLab()
        try:
            cls.lab.start("collector", [binary("flexmon-collector"), "--config", cls.lab.config])
            cls.lab.start_manager()
        except Exception:
            cls.lab.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()

    def check_config(self, text):
        path = os.path.join(self.lab.dir, "check.yaml")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([binary("flexmon-manager"), "--config", path, "--check-config"],
                             capture_output=True, text=True, timeout=30)
        return path, out

    def test_config_holds_no_token(self):
        with open(self.lab.config) as f:
            text = f.read()
        for token in list(self.lab.tokens.values()) + [self.lab.generated]:
            self.assertNotIn(token, text)
        self.assertNotIn(" token:", text)

    def test_generated_token_authenticates(self):
        gen = self.lab.proxy("gen", self.lab.generated)
        self.assertEqual(gen.probe.list(), [])
        self.assertFault(NOT_AUTHENTICATED, self.lab.proxy("gen", self.lab.generated + "x").probe.list)

    def test_wrong_credentials_get_one_answer(self):
        messages = {
            self.assertFault(NOT_AUTHENTICATED, self.lab.proxy("bob", "not-the-token").probe.list),
            self.assertFault(NOT_AUTHENTICATED,
                             self.lab.proxy("bob", self.lab.tokens["admin"]).probe.list),
            self.assertFault(NOT_AUTHENTICATED,
                             self.lab.proxy("mallory", self.lab.tokens["bob"]).probe.list),
        }
        self.assertEqual(len(messages), 1, messages)

    def test_reader_reads_and_asks_for_nothing(self):
        carol = self.lab.proxy("carol")
        message = self.assertFault(NOT_PERMITTED, carol.probe.request, MESH)
        self.assertEqual(message, "probe.request: not permitted for role reader "
                                  "(roles that may call it: user, service, admin)")
        self.assertIn("user.usage", self.assertFault(NOT_PERMITTED, carol.user.usage))
        self.assertEqual(len(carol.node.list()), 2)
        self.assertIsInstance(carol.query.paths({}), list)
        self.assertIn("rows", carol.query.latency({"limit": 1}))
        calls = xmlrpc.client.MultiCall(carol)
        calls.probe.list()
        calls.node.list()
        results = calls()
        with self.assertRaises(xmlrpc.client.Fault) as refused:
            results[0]
        self.assertEqual(refused.exception.faultCode, NOT_PERMITTED)
        self.assertEqual(len(results[1]), 2)

    def test_service_asks_like_a_user_and_sees_its_own(self):
        mesh, bob, admin = self.lab.proxy("mesh"), self.lab.proxy("bob"), self.lab.proxy("admin")
        mine = mesh.probe.request(MESH)["id"]
        theirs = bob.probe.request(dict(MESH, interval=20))["id"]
        try:
            self.assertEqual([r["id"] for r in mesh.probe.list()], [mine])
            self.assertIn("another user", self.assertFault(NOT_PERMITTED, mesh.probe.cancel, theirs))
            self.assertEqual(mesh.user.usage()["requests"]["used"], 1)
            listed = {r["id"] for r in admin.probe.list()}
            self.assertTrue({mine, theirs} <= listed, listed)
        finally:
            admin.probe.cancel(mine)
            admin.probe.cancel(theirs)

    def test_help_names_the_roles(self):
        anonymous = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.lab.ports['xmlrpc']}/RPC2")
        self.assertTrue(anonymous.system.methodHelp("probe.request")
                        .endswith("Roles: user, service, admin."))
        self.assertTrue(anonymous.system.methodHelp("query.latency")
                        .endswith("Roles: reader, user, service, admin."))

    def test_check_config_refuses_a_token_in_clear(self):
        text = self.lab.config_text().replace(
            self.lab.token_hashes["admin"], "token: " + self.lab.tokens["admin"])
        path, out = self.check_config(text)
        self.assertEqual(out.returncode, CONFIG_ERROR_EXIT, out)
        line = text[:text.index("token: ")].count("\n") + 1
        self.assertIn(f"{path}:{line}: users[0].token: tokens are not stored in clear", out.stderr)
        self.assertIn("flexmon-manager hash-token", out.stderr)
        self.assertNotIn(self.lab.tokens["admin"], out.stderr)

    def test_check_config_refuses_a_malformed_hash(self):
        good = self.lab.token_hashes["bob"]
        text = self.lab.config_text().replace(good, good[:-3] + '"')  # a digit short
        path, out = self.check_config(text)
        self.assertEqual(out.returncode, CONFIG_ERROR_EXIT, out)
        line = text[:text.index("name: bob")].count("\n") + 1
        self.assertIn(f"{path}:{line}: users[1].token_hash: DIGEST_HEX: expected 64 hex digits",
                      out.stderr)


if __name__ == "__main__":
    unittest.main()
