"""Credentials (user=, password=) against a protobusd with auth = required.

The password hash comes from `protobus passwd --stdin` of the same build
(the CLI next to PROTOBUSD), so the test needs no argon2 module.
"""

import os
import subprocess

import pytest

import protobus
from conftest import PROTOBUSD

PASSWORD = "py-secret-4e1b"


@pytest.fixture
def auth_daemon(make_daemon):
    cli = os.path.join(os.path.dirname(PROTOBUSD), "protobus")
    h = subprocess.run([cli, "passwd", "--stdin"], input=PASSWORD + "\n", capture_output=True,
                       text=True, check=True).stdout.strip()
    users = ("[partition events]\nmatch = .*\n"
             "[user app]\npassword_hash = %s\npublish = orders\\..*\n"
             "subscribe = orders\\..*\ndeny_subscribe = orders\\.secret\n"
             "[user root]\npassword_hash = %s\npublish = .*\nsubscribe = .*\n" % (h, h))
    return make_daemon(partitions=users, server="auth = required\nauth_failure_delay_ms = 50\n")


def test_credentials_rights_and_refusals(auth_daemon):
    addr = auth_daemon.address
    with pytest.raises(protobus.UnauthenticatedError):
        protobus.Client(addr, timeout=20, user="app", password="wrong")
    with pytest.raises(protobus.UnauthenticatedError):
        protobus.Client(addr, timeout=20)
    with protobus.Client(addr, timeout=20, user="root", password=PASSWORD) as root:
        assert root.server.user == "root"
        for t in ("orders.a", "payments.x", "orders.secret", "orders.b"):
            root.publish(t, b"x")
    with protobus.Client(addr, timeout=20, user="app", password=PASSWORD) as app:
        app.publish("orders.c", b"y")
        with pytest.raises(protobus.PermissionDeniedError) as e:
            app.publish_many([("orders.d", b"1"), ("payments.z", b"2")])
        assert "payments.z" in e.value.message
        got = [ev.topic for ev in app.subscribe([r".*|payments\..*"], start="beginning",
                                                until_caught_up=True, timeout=10)]
        assert got == ["orders.a", "orders.b", "orders.c"]
    assert PASSWORD not in auth_daemon.log_text()


def _certs(d):
    """A CA, a server certificate for 127.0.0.1 and a client one (CN app)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=py-ca")
    with open(os.path.join(d, "srv.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    for name, cn, ext in (("srv", "127.0.0.1", ["-extfile", "srv.ext"]), ("app", "app", [])):
        run("req", *key, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", *ext)
    return {n: os.path.join(d, n) for n in ("ca.pem", "srv.pem", "srv.key", "app.pem", "app.key")}


def test_tls_and_client_certificate(make_daemon, tmp_path):
    c = _certs(str(tmp_path))
    cli = os.path.join(os.path.dirname(PROTOBUSD), "protobus")
    h = subprocess.run([cli, "passwd", "--stdin"], input=PASSWORD + "\n", capture_output=True,
                       text=True, check=True).stdout.strip()
    d = make_daemon(
        partitions="[partition events]\nmatch = .*\n[user app]\npassword_hash = %s\n"
                   "publish = orders\\..*\nsubscribe = orders\\..*\n" % h,
        server="auth = required\ntls_cert = %s\ntls_key = %s\ntls_client_ca = %s\n"
               % (c["srv.pem"], c["srv.key"], c["ca.pem"]))
    addr = "tls://" + d.address
    with protobus.Client(addr, timeout=20, tls_ca=c["ca.pem"], tls_cert=c["app.pem"],
                         tls_key=c["app.key"]) as app:
        assert app.server.user == "app"  # the certificate's CN, no password
        app.publish("orders.tls", b"z")
        got = [ev.topic for ev in app.subscribe([".*"], start="beginning",
                                                until_caught_up=True, timeout=10)]
        assert got == ["orders.tls"]
    with pytest.raises(protobus.ConnectionLostError):
        protobus.Client(addr, timeout=20)  # the system's CAs do not know this one
