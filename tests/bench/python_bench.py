#!/usr/bin/env python3
"""Throughput of the Python client (client/python) against a real protobusd.

Each run starts a fresh protobusd (temp data dir, 127.0.0.1, a free port,
the default durable fsync = always, stopped by its PID), publishes EVENTS
events of 100 B with publish_many, then subscribes from the beginning and
reads them all back until CaughtUp (topic and payload of every event looked
at), and stops the daemon. Prints the median of RUNS runs of each figure.

    make bench-python                      # installs the package, then runs this
    python3 tests/bench/python_bench.py    # with protobus importable
    --events N (default 1000000), --runs R (default 3); BUILD (default build)
    names the directory holding protobusd.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import google.protobuf
import protobus
from google.protobuf.internal import api_implementation

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PAYLOAD = bytes(range(100))  # 100 B
GOAL_PUBLISH = 100000
GOAL_SUBSCRIBE = 200000


def start_daemon(workdir):
    protobusd = os.path.join(os.environ.get("BUILD") or os.path.join(TOP, "build"), "protobusd")
    conf = os.path.join(workdir, "protobusd.conf")
    with open(conf, "w") as f:
        f.write("[server]\nlisten = 127.0.0.1:0\ndata_dir = %s\nlog_level = warn\n"
                "[partition events]\nmatch = .*\nsegment_bytes = 64M\n"
                % os.path.join(workdir, "data"))
    port_file = os.path.join(workdir, "port")
    proc = subprocess.Popen([protobusd, "-c", conf, "--port-file", port_file])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("python_bench: protobusd exited with %d" % proc.returncode)
        if os.path.exists(port_file):
            with open(port_file) as f:
                port = f.read().strip()
            if port:
                return proc, "127.0.0.1:" + port
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    sys.exit("python_bench: protobusd wrote no port file within 10 s")


def stop_daemon(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_run(n):
    workdir = tempfile.mkdtemp(prefix="protobus-pybench.")
    proc = None
    try:
        proc, address = start_daemon(workdir)
        with protobus.Client(address) as c:
            t0 = time.perf_counter()
            acks = c.publish_many(("bench.python", PAYLOAD) for _ in range(n))
            pub = n / (time.perf_counter() - t0)
            assert len(acks) == n and acks[-1] == ("events", n - 1), acks[-1]
            seen = 0
            size = 0
            t0 = time.perf_counter()
            for ev in c.subscribe("bench.python", start="beginning", until_caught_up=True,
                                  timeout=10):
                ev.topic
                size += len(ev.payload)
                seen += 1
            sub = seen / (time.perf_counter() - t0)
            assert seen == n and size == n * len(PAYLOAD), (seen, size)
        return pub, sub
    finally:
        if proc is not None:
            stop_daemon(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    pubs, subs = [], []
    for i in range(args.runs):
        pub, sub = one_run(args.events)
        pubs.append(pub)
        subs.append(sub)
        print("run %d: publish %.0f events/s, subscribe %.0f events/s" % (i + 1, pub, sub),
              file=sys.stderr)
    pub, sub = statistics.median(pubs), statistics.median(subs)
    print("Python client benchmark: protobus %s, Python %s, protobuf %s (%s backend), "
          "%d x 100 B events, median of %d run(s), %d cores"
          % (protobus.__version__, sys.version.split()[0], google.protobuf.__version__,
             api_implementation.Type(), args.events, args.runs, os.cpu_count()))
    print("| workload | events/s (median) | goal | met |")
    print("| --- | --- | --- | --- |")
    print("| publish_many, 100 B | %.0f | >= %d | %s |"
          % (pub, GOAL_PUBLISH, "yes" if pub >= GOAL_PUBLISH else "NO"))
    print("| subscribe from beginning, 100 B | %.0f | >= %d | %s |"
          % (sub, GOAL_SUBSCRIBE, "yes" if sub >= GOAL_SUBSCRIBE else "NO"))


if __name__ == "__main__":
    main()
