"""Slow-header connections against the listener's timeouts and limit (issue 14; docs/BENCHMARKS.md).

Starts a release `tether server` (TETHER_BIN, default target/release/tether) with its open-file
limit lowered to FILES (default 512, so --max-connections defaults to 256), opens SLOW (default
300) connections that each send half a request's headers and then one more header line every
second, and meanwhile asks /healthz once a second on a fresh connection. Prints when the server
closed the slow connections (seconds after they were opened) and how long each /healthz took.

    cargo build --release -p tether-cli && python3 scripts/bench/slow_headers.py
"""
import benchserver, os, resource, socket, threading, time, urllib.request

FILES = int(os.environ.get("FILES", "512"))
SLOW = int(os.environ.get("SLOW", "300"))
PORT = 18933

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, hard))  # inherited by the server
srv, base = benchserver.start(PORT)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

closed_after = []
lock = threading.Lock()


def slow(t0):
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    s.settimeout(1.0)
    i = 0
    while time.time() - t0 < 120:
        try:
            if s.recv(4096) == b"":
                break
        except socket.timeout:
            try:
                s.sendall(f"X-Slow-{i}: a\r\n".encode())
                i += 1
            except OSError:
                break
        except OSError:
            break
    with lock:
        closed_after.append(time.time() - t0)
    s.close()


t0 = time.time()
threads = [threading.Thread(target=slow, args=(t0,)) for _ in range(SLOW)]
for t in threads:
    t.start()
health = []
while any(t.is_alive() for t in threads) and time.time() - t0 < 130:
    h0 = time.time()
    try:
        urllib.request.urlopen(base + "/healthz", timeout=30).read()
        health.append((h0 - t0, time.time() - h0))
    except Exception as e:
        health.append((h0 - t0, f"failed: {e}"))
    time.sleep(1)
for t in threads:
    t.join()
metrics = urllib.request.urlopen(base + "/metrics").read().decode()
counters = [l for l in metrics.splitlines() if l.startswith("tether_http_connection")]
srv.terminate()
srv.wait()
closed_after.sort()
print(f"{SLOW} slow-header connections, server open-file limit {FILES}:")
print(f"  closed by the server after {closed_after[0]:.1f} s (first) .. {closed_after[-1]:.1f} s (last); "
      f"median {closed_after[len(closed_after) // 2]:.1f} s")
print("  " + "; ".join(counters))
print("  /healthz during them (asked at, took):")
for at, took in health:
    print(f"    {at:5.1f} s  {took if isinstance(took, str) else f'{took * 1000:.0f} ms'}")
