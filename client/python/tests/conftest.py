"""Fixtures: a real protobusd on 127.0.0.1, a free port, a temp data dir.

PROTOBUSD names the daemon binary (default: build/protobusd of the
repository these tests are in). Each daemon is started with --port-file and
stopped by its PID (SIGTERM, which must end it with status 0: the daemon
acknowledges everything it received and exits cleanly; SIGKILL after 10 s).
"""

import os
import signal
import subprocess
import time

import pytest

import protobus

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTOBUSD = os.environ.get("PROTOBUSD") or os.path.join(REPO, "build", "protobusd")

CATCH_ALL = """
[partition events]
match = .*
"""


class Daemon:
    """One protobusd process; ``address`` is "127.0.0.1:PORT"."""

    def __init__(self, workdir, partitions=CATCH_ALL, server="", port=0):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.partitions = partitions
        self.server = server
        self.proc = None
        self.port = port
        self.start()

    def start(self):
        conf = os.path.join(self.workdir, "protobusd.conf")
        with open(conf, "w") as f:
            f.write("[server]\nlisten = 127.0.0.1:%d\ndata_dir = %s\nlog_level = warn\n%s\n%s"
                    % (self.port, os.path.join(self.workdir, "data"), self.server,
                       self.partitions))
        port_file = os.path.join(self.workdir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        self.log = open(os.path.join(self.workdir, "protobusd.log"), "ab")
        self.proc = subprocess.Popen([PROTOBUSD, "-c", conf, "--port-file", port_file],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("protobusd exited with %d at start:\n%s"
                                   % (self.proc.returncode, self.log_text()))
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        else:
            self.kill()
            raise RuntimeError("protobusd wrote no port file within 10 s")
        self.address = "127.0.0.1:%d" % self.port

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.workdir, "protobusd.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("protobusd did not stop within 10 s of SIGTERM")
        self.proc = None
        self.log.close()
        return rc

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.log.close()

    def restart(self):
        """Stops it and starts it again on the same port and data dir."""
        assert self.stop() == 0, self.log_text()
        self.start()


@pytest.fixture
def make_daemon(tmp_path):
    """Starts daemons with a given config (partitions, [server] lines); stops them."""
    daemons = []

    def make(partitions=CATCH_ALL, server=""):
        d = Daemon(str(tmp_path / ("d%d" % len(daemons))), partitions, server)
        daemons.append(d)
        return d

    yield make
    for d in daemons:
        if d.proc is not None:
            rc = d.stop()
            assert rc == 0, "protobusd exited with %d:\n%s" % (rc, d.log_text())


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


@pytest.fixture
def client(daemon):
    with protobus.Client(daemon.address, timeout=20) as c:
        yield c

