"""Starts a release `tether server` for the bench scripts in this directory."""
import os, subprocess, tempfile, time, urllib.request


def start(port, env_extra=None):
    """A server on 127.0.0.1:`port` with a fresh data directory (TETHER_BIN, default
    target/release/tether); returns (process, base URL) once /healthz answers."""
    base = f"http://127.0.0.1:{port}"
    try:
        urllib.request.urlopen(base + "/healthz", timeout=2)
        raise SystemExit(f"something already answers on {base}: a server left over from an earlier run?")
    except OSError:
        pass
    data = tempfile.mkdtemp(prefix="tether-bench-")
    env = dict(os.environ, RUST_LOG="warn", **(env_extra or {}))
    srv = subprocess.Popen(
        [os.environ.get("TETHER_BIN", "target/release/tether"), "server",
         "--listen", f"127.0.0.1:{port}", "--data-dir", data],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if srv.poll() is not None:
            raise SystemExit(f"the server exited with {srv.returncode} before answering")
        try:
            urllib.request.urlopen(base + "/healthz")
            return srv, base
        except Exception:
            time.sleep(0.1)
    srv.kill()
    raise SystemExit(f"the server did not answer on {base}")
