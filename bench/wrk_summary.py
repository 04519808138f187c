#!/usr/bin/env python3
"""Reads wrk --latency output and prints: req/s p50_ms p99_ms non2xx_count."""
import re
import sys

text = open(sys.argv[1]).read()


def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % label, text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print("%.0f %.3f %.3f %s" % (rps, ms("50%"), ms("99%"), bad.group(1) if bad else "0"))
