"""TLS on the XML-RPC API: the real flexmon-manager with a certificate from a
CA this test makes with the `openssl` command, called by Python's
xmlrpc.client with an ssl context, by curl and by the flexmon CLI (--ca);
then with manager.tls_client_ca, where only clients with a certificate that
CA signed get in. Everything on 127.0.0.1; every wait bounded."""

import os
import socket
import ssl
import subprocess
import time
import unittest
import xmlrpc.client

from flexmon_harness import Flexmon, binary, wait_for

LIST = (b'<?xml version="1.0"?><methodCall><methodName>probe.list</methodName>'
        b'<params></params></methodCall>')


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(folder):
    """ca.pem, server.pem/server.key (127.0.0.1 and localhost), client.pem/client.key,
    and other-ca.pem, a CA that signed nothing here."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN=flexmon test {ca}", cwd=folder)
    with open(os.path.join(folder, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(os.path.join(folder, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                f"/CN=flexmon test {name}", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                f"{name}.ext", cwd=folder)


class TlsLab(Flexmon):
    client_ca = False

    def config_text(self):
        keys = "  tls_cert: server.pem\n  tls_key: server.key\n  http_timeout_s: 2\n"
        if self.client_ca:
            keys += "  tls_client_ca: ca.pem\n"
        return super().config_text().replace("manager:\n", "manager:\n" + keys, 1)

    def https_url(self, user="admin"):
        return f"https://{user}:{self.tokens[user]}@127.0.0.1:{self.ports['xmlrpc']}/RPC2"

    def start_tls_manager(self):
        make_pki(self.dir)
        self.start("manager", [binary("flexmon-manager"), "--config", self.config])
        context = self.context(cert=self.client_ca)
        wait_for(lambda: self.probe_list(context) is not None, 15, "the manager's TLS API")

    def probe_list(self, context):
        """One probe.list call on a connection of its own, with `context`."""
        with xmlrpc.client.ServerProxy(self.https_url(), context=context) as api:
            return api.probe.list()

    def path(self, name):
        return os.path.join(self.dir, name)

    def context(self, ca="ca.pem", cert=False):
        context = ssl.create_default_context(cafile=self.path(ca))
        if cert:
            context.load_cert_chain(self.path("client.pem"), self.path("client.key"))
        return context

    def curl(self, *extra):
        return subprocess.run(
            ["curl", "-sS", "--max-time", "20", "-u", f"admin:{self.tokens['admin']}",
             "-H", "Content-Type: text/xml", "--data-binary", "@-", *extra,
             f"https://127.0.0.1:{self.ports['xmlrpc']}/RPC2"],
            input=LIST, capture_output=True, timeout=30)

    def cli(self, *extra):
        return subprocess.run(
            [binary("flexmon"), "--url", self.https_url(), "--timeout", "20", *extra,
             "probe", "list"], capture_output=True, text=True, timeout=30)


class Tls(unittest.TestCase):
    def setUp(self):
        self.lab = TlsLab(nodes=1)
        self.addCleanup(self.lab.close)
        self.lab.start_tls_manager()

    def test_python_curl_and_cli_are_served_over_tls(self):
        lab = self.lab
        with xmlrpc.client.ServerProxy(lab.https_url(), context=lab.context()) as api:
            for _ in range(3):  # one keep-alive connection, several calls
                self.assertEqual(api.probe.list(), [])

        done = lab.curl("--cacert", lab.path("ca.pem"))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(b"<methodResponse>", done.stdout)

        cli = lab.cli("--ca", lab.path("ca.pem"))
        self.assertEqual(cli.returncode, 0, cli.stderr)

    def test_a_certificate_from_another_ca_is_refused_by_every_client(self):
        lab = self.lab
        with self.assertRaises(ssl.SSLCertVerificationError):
            lab.probe_list(lab.context("other-ca.pem"))
        self.assertNotEqual(lab.curl("--cacert", lab.path("other-ca.pem")).returncode, 0)
        cli = lab.cli("--ca", lab.path("other-ca.pem"))
        self.assertEqual(cli.returncode, 69, cli.stderr)  # server unreachable

    def test_plain_http_on_the_tls_port_gets_no_answer(self):
        with xmlrpc.client.ServerProxy(self.lab.url()) as api:
            with self.assertRaises((OSError, xmlrpc.client.ProtocolError,
                                    xmlrpc.client.ResponseError)):
                api.probe.list()

    def test_a_handshake_that_never_comes_is_closed_at_the_deadline(self):
        with socket.create_connection(("127.0.0.1", self.lab.ports["xmlrpc"])) as s:
            s.settimeout(30)  # far past http_timeout_s: 2
            self.assertEqual(s.recv(100), b"")
        # And the manager still serves.
        self.assertEqual(self.lab.probe_list(self.lab.context()), [])


class TlsClientCertificates(unittest.TestCase):
    def setUp(self):
        self.lab = TlsLab(nodes=1)
        self.lab.client_ca = True
        with open(self.lab.config, "w") as f:
            f.write(self.lab.config_text())
        self.addCleanup(self.lab.close)
        self.lab.start_tls_manager()

    def test_only_clients_with_a_certificate_from_the_ca_get_in(self):
        lab = self.lab
        self.assertEqual(lab.probe_list(lab.context(cert=True)), [])
        with self.assertRaises((ssl.SSLError, OSError)):
            lab.probe_list(lab.context())

        ca, cert, key = lab.path("ca.pem"), lab.path("client.pem"), lab.path("client.key")
        self.assertNotEqual(lab.curl("--cacert", ca).returncode, 0)
        done = lab.curl("--cacert", ca, "--cert", cert, "--key", key)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(b"<methodResponse>", done.stdout)

        self.assertEqual(lab.cli("--ca", ca).returncode, 69)
        cli = lab.cli("--ca", ca, "--cert", cert, "--key", key)
        self.assertEqual(cli.returncode, 0, cli.stderr)


if __name__ == "__main__":
    unittest.main()
