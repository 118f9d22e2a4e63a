"""/metrics size under requests with made-up methods (issue 14; docs/BENCHMARKS.md).

Starts a release `tether server` (TETHER_BIN, default target/release/tether), sends 5,000
requests with distinct 1,000-character methods to distinct paths, and prints the size of
/metrics before and after.

    cargo build --release -p tether-cli && python3 scripts/bench/metrics_labels.py
"""
import benchserver, subprocess, os, time, urllib.request, http.client
srv, base = benchserver.start(18932, None)
size0 = len(urllib.request.urlopen(base + "/metrics").read())
c = http.client.HTTPConnection("127.0.0.1", 18932)
for i in range(5000):
    c.request("X" * 990 + f"{i:010d}", f"/api/v1/runners/{i}")
    c.getresponse().read()
size1 = len(urllib.request.urlopen(base + "/metrics").read())
print(f"/metrics: {size0} bytes before, {size1} bytes after 5,000 requests with distinct 1,000-character methods")
srv.terminate(); srv.wait()
