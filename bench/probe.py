#!/usr/bin/env python3
"""Probe an HTTP URL every 50 ms until told to stop; then print how long it was
unreachable (refused, reset, 502, timeout) and in maintenance (503).
Usage: probe.py URL STOPFILE OUTFILE"""
import http.client, json, os, sys, time, urllib.parse

url, stop, out = sys.argv[1:4]
u = urllib.parse.urlparse(url)
samples = []
while not os.path.exists(stop):
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=0.5)
        c.request("GET", u.path or "/")
        code = c.getresponse().status
        c.close()
    except Exception:
        code = 0
    samples.append((t, code))
    time.sleep(max(0.0, 0.05 - (time.monotonic() - t)))
unreach = maint = 0.0
for (t0, c0), (t1, _) in zip(samples, samples[1:]):
    if c0 == 503:
        maint += t1 - t0
    elif c0 == 0 or c0 == 502 or c0 >= 500:
        unreach += t1 - t0
json.dump({"unreachable": unreach, "maintenance": maint, "samples": len(samples)}, open(out, "w"))
