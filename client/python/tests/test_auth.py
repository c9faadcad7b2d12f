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
