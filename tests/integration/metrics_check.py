#!/usr/bin/env python3
"""Parses a /metrics body (Prometheus text format 0.0.4) with
prometheus_client's own parser and checks it against expectations.

Usage: metrics_check.py FILE NAME{labels}=VALUE|>=VALUE ...
  NAME may name a sample (e.g. protobus_publish_ack_seconds_count);
  {partition=orders} selects by label. Exits 1 naming each mismatch.
Also checks every histogram: buckets cumulative, +Inf bucket == _count.
"""
import re
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    samples = {}
    bad = []
    for fam in text_string_to_metric_families(text):
        if fam.type == "histogram":
            last, inf, count = -1, None, None
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    if s.value < last:
                        bad.append(f"{fam.name}: buckets not cumulative")
                    last = s.value
                    if s.labels.get("le") == "+Inf":
                        inf = s.value
                elif s.name.endswith("_count"):
                    count = s.value
            if inf != count:
                bad.append(f"{fam.name}: +Inf bucket {inf} != count {count}")
        for s in fam.samples:
            key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
            samples[key] = s.value
    for want in sys.argv[2:]:
        m = re.fullmatch(r"(.+?)(>=|=)([-+0-9.e]+)", want)
        key, op, val = m.group(1), m.group(2), float(m.group(3))
        if key not in samples:
            bad.append(f"{key}: missing")
            continue
        got = samples[key]
        if (op == "=" and got != val) or (op == ">=" and got < val):
            bad.append(f"{key} = {got}, want {op} {val}")
    for b in bad:
        print("    " + b, file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
