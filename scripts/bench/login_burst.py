"""Login memory under a burst of bad logins (issue 14; docs/BENCHMARKS.md).

Starts a release `tether server` (TETHER_BIN, default target/release/tether) on a fresh data
directory, then twice sends 64 web logins with wrong passwords at once (64 usernames, so the
lockout is not involved) and one correct login right after them; prints the statuses and the
server's RSS before, at its peak (VmHWM) and after.

    cargo build --release -p tether-cli && python3 scripts/bench/login_burst.py
"""
import benchserver, re, sys, threading, time, subprocess, os, urllib.request, urllib.parse, http.cookiejar
srv, base = benchserver.start(18931, {"TETHER_ADMIN_PASSWORD": "the-right-password-123"})
def rss(field):
    for l in open(f"/proc/{srv.pid}/status"):
        if l.startswith(field): return int(l.split()[1]) / 1024
def attempt(user, password, out):
    jar = http.cookiejar.CookieJar()
    op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = op.open(base + "/login").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"csrf": csrf, "username": user, "password": password, "next": "/runners"}).encode()
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k): return None
    op.add_handler(NoRedirect())
    try:
        r = op.open(base + "/login", data); out.append(r.status)
    except urllib.error.HTTPError as e:
        out.append(e.code)
before = rss("VmRSS:")
for rnd in range(2):
    statuses = []
    threads = [threading.Thread(target=attempt, args=(f"guess-{rnd}-{i}", "wrong-password!!", statuses)) for i in range(64)]
    good = []
    t0 = time.time()
    for t in threads: t.start()
    time.sleep(0.05)
    g = threading.Thread(target=attempt, args=("admin", "the-right-password-123", good)); g.start()
    for t in threads: t.join()
    g.join()
    print(f"round {rnd}: 64 bad logins in {time.time()-t0:.2f} s: " + ", ".join(f"{s}×{statuses.count(s)}" for s in sorted(set(statuses))) + f"; the correct login: {good}")
time.sleep(1)
print(f"server RSS: {before:.1f} MiB before, peak {rss('VmHWM:'):.1f} MiB, {rss('VmRSS:'):.1f} MiB after")
srv.terminate(); srv.wait()
