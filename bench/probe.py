#!/usr/bin/env python3
"""Probe an HTTP URL every PROBE_INTERVAL seconds (default 0.02) until told to
stop; then print how long it was unreachable (refused, reset, timeout, 5xx
other than 503) and in maintenance (503), how many requests failed, and the
slowest answer. A request may take up to 10 s (a browser waits longer): one
that is slow but answered is slow, not failed.
PROBE_HOST sets the Host header (Frappe serves the site the Host names).
Usage: probe.py URL STOPFILE OUTFILE"""
import http.client, json, os, sys, time, urllib.parse

url, stop, out = sys.argv[1:4]
interval = float(os.environ.get("PROBE_INTERVAL", "0.02"))
host = os.environ.get("PROBE_HOST")
u = urllib.parse.urlparse(url)
samples = []
failures = []  # the first few: when, and what came
start = time.monotonic()
slowest = 0.0
while not os.path.exists(stop):
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
        c.request("GET", u.path or "/", headers={"Host": host} if host else {})
        code = c.getresponse().status
        c.close()
    except Exception as e:
        code = 0
        why = type(e).__name__
    samples.append((t, code))
    if not (200 <= code < 300) and code != 503 and len(failures) < 5:
        failures.append(f"{t - start:.2f}s: {code or why}")
    slowest = max(slowest, time.monotonic() - t)
    time.sleep(max(0.0, interval - (time.monotonic() - t)))
unreach = maint = 0.0
for (t0, c0), (t1, _) in zip(samples, samples[1:]):
    if c0 == 503:
        maint += t1 - t0
    elif c0 == 0 or c0 >= 500:
        unreach += t1 - t0
failed = sum(1 for _, c in samples if not (200 <= c < 300) and c != 503)
in_maint = sum(1 for _, c in samples if c == 503)
json.dump({"unreachable": unreach, "maintenance": maint, "samples": len(samples),
           "failed": failed, "failures": failures, "maintenance_answers": in_maint,
           "slowest": slowest}, open(out, "w"))
