"""``python -m benchmarks.serve_hostile [--code DIR] [--seconds S] [--out FILE]``: the page's /api/health latency
(p50/p99) and the server's peak memory while each of issue #22's attacks runs.

The server is a process of its own (tests/agents/serve_process.py: the real app and uvicorn over the scripted
model doubles, so the figures are the server's, not a model's), started from the code in ``--code`` (default:
this checkout; give a ``git worktree`` of an older commit to measure before a change). While one attack runs
for ``--seconds`` a prober asks ``GET /api/health`` every 20 ms, each time on a new plain socket (as curl does: a
kept-alive httpx client adds a steady ~44 ms per request on this machine, and a new httpx client ~35 ms of its
own set-up, either of which would hide the effects measured); each latency is the request's wall time,
connection included, until the server closes it. The yardstick is the idle row (no attack) of the same server: an attack that blocks the
event loop shows as a p99 far above it, one that reads bodies into memory as peak RSS growth.

Attacks: a 400 MB body without the page's header (``none-header``), a chunked 200 MB multipart upload
(``chunked-upload``), an edit spec of 12,000 pairs (``edit-12k``), ``/api/batches`` over a 20,000-record
results.jsonl (``batches-20k``), ``/api/runs`` with 5,000 runs in the data folder (``runs-5k``), 6000×6000 PNG
uploads four at once (``huge-png``). Each is repeated by two client threads for the whole window.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20
HEADERS = {"X-ExpectDiff": "1"}
FILE_PART = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
             b"Content-Type: image/png\r\n\r\n")


def start_server(code: Path, data: Path, batch: Path) -> tuple[subprocess.Popen, int]:
    script = data.parent / "serve_process.py"  # from this checkout: older commits may not have it
    shutil.copy(REPO / "tests" / "agents" / "serve_process.py", script)
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen([sys.executable, str(script), "--data", str(data), "--batch", str(batch)], cwd=code, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("serving on "):
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, int(line.strip().rstrip("/").rsplit(":", 1)[1])


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def raw_post(port: int, head: bytes, total: int, chunked: bool = False, prefix: bytes = b"") -> None:
    block = b"\0" * MB
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(head)
            if prefix:
                sock.sendall(b"%x\r\n%s\r\n" % (len(prefix), prefix) if chunked else prefix)
            sent = 0
            while sent < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                sent += len(block)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            sock.recv(1024)
    except OSError:
        pass  # the server closed the connection: the answer came before the body


def prepare_data(data: Path, batch: Path, runs: int, records: int) -> None:
    """``runs`` finished runs in the data folder and ``records`` records in a batch folder's results.jsonl."""
    runs_dir = data / "runs"
    runs_dir.mkdir(parents=True)
    for i in range(runs):
        run_id = f"{i:016x}"
        (runs_dir / run_id).mkdir()
        meta = {"run_id": run_id, "filename": f"img{i}.png", "image_id": f"{i:016x}", "created_at": 1.7e9 + i,
                "request": {"framework": "enhanced", "max_steps": 3, "seeds": [0, 1]}, "settings_fingerprint": "old",
                "status": "done", "timeline": [{"node": "init", "t": 0.1}] * 8}
        (runs_dir / run_id / "run.json").write_text(json.dumps(meta, indent=1))
    batch.mkdir(parents=True)
    prompt = {"content": ["a tabby cat"] * 6, "style": ["oil painting"] * 4, "rendered": "a tabby cat, oil painting" * 4}
    with open(batch / "results.jsonl", "w") as fh:
        for i in range(records):
            fh.write(json.dumps({"image_id": f"{i:012x}", "status": "done", "source": f"img{i}.png", "prompt": prompt,
                                 "iterations": [{"iteration": k, "clip_i": 0.5, "rendered": "x" * 200} for k in range(5)]})
                     + "\n")


def huge_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buf, "PNG")
    return buf.getvalue()


def attacks(port: int, run_id: str) -> dict:
    base = f"http://127.0.0.1:{port}"
    host = b"Host: 127.0.0.1:%d\r\n" % port
    spec = " ".join(f"-w{i} +v{i}" for i in range(12_000))
    png = huge_png()

    def client_call(method: str, url: str, **kw):
        with httpx.Client(base_url=base, timeout=60) as c:
            try:
                c.request(method, url, **kw)
            except httpx.HTTPError:
                pass

    return {
        "idle": None,
        "none-header": lambda: raw_post(port, b"POST /api/runs/%s/edits HTTP/1.1\r\n%sContent-Type: text/plain\r\n"
                                              b"Content-Length: %d\r\n\r\n" % (run_id.encode(), host, 400 * MB), 400 * MB),
        "chunked-upload": lambda: raw_post(port, b"POST /api/runs HTTP/1.1\r\n%sX-ExpectDiff: 1\r\nContent-Type: "
                                                 b"multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                 % host, 200 * MB, chunked=True, prefix=FILE_PART),
        "edit-12k": lambda: client_call("POST", f"/api/runs/{run_id}/edits", json={"substitutions": spec}, headers=HEADERS),
        "batches-20k": lambda: client_call("GET", "/api/batches"),
        "runs-5k": lambda: client_call("GET", "/api/runs"),
        "huge-png": lambda: client_call("POST", "/api/runs", files={"file": ("huge.png", png, "image/png")}, headers=HEADERS),
    }


def measure(proc: subprocess.Popen, port: int, attack, seconds: float, threads: int = 2) -> dict:
    stop = threading.Event()
    latencies: list[float] = []
    peak = [rss(proc.pid)]
    before = peak[0]

    def attacker():
        while not stop.is_set():
            attack()

    request = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port

    def prober():
        while not stop.is_set():
            t = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                sock.sendall(request)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            latencies.append(time.perf_counter() - t)
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"/api/health answered {answer[:80]!r}")
            time.sleep(0.02)

    def sampler():
        while not stop.is_set():
            peak[0] = max(peak[0], rss(proc.pid))
            time.sleep(0.01)

    workers = [threading.Thread(target=prober), threading.Thread(target=sampler)]
    if attack is not None:
        workers += [threading.Thread(target=attacker) for _ in range(threads)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join(300)
    ms = np.array(latencies) * 1e3
    return {"health_p50_ms": round(float(np.percentile(ms, 50)), 2), "health_p99_ms": round(float(np.percentile(ms, 99)), 2),
            "health_max_ms": round(float(ms.max()), 1), "probes": len(ms),
            "peak_rss_growth_mb": round((peak[0] - before) / MB, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", type=Path, default=REPO, help="The checkout whose agents/ the server runs (default: this one).")
    p.add_argument("--seconds", type=float, default=6.0, help="Length of each attack's window (default %(default)s).")
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--records", type=int, default=20000)
    p.add_argument("--out", type=Path, help="Also write the rows as JSON here.")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data, batch = Path(tmp) / "data", Path(tmp) / "batch"
        prepare_data(data, batch, args.runs, args.records)
        proc, port = start_server(args.code.resolve(), data, batch)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
                from tests.agents.serve_doubles import png_of, world

                run_id = c.post("/api/runs", files={"file": ("cat.png", png_of(world()), "image/png")},
                                headers=HEADERS).json()["run_id"]
                deadline = time.monotonic() + 120
                while c.get(f"/api/runs/{run_id}").json()["run"]["status"] != "done" and time.monotonic() < deadline:
                    time.sleep(0.2)
            rows = {}
            for name, attack in attacks(port, run_id).items():
                rows[name] = measure(proc, port, attack, args.seconds)
                r = rows[name]
                print(f"{name:15} health p50 {r['health_p50_ms']:8.2f} ms  p99 {r['health_p99_ms']:9.2f} ms  "
                      f"max {r['health_max_ms']:8.1f} ms  ({r['probes']} probes)  peak RSS +{r['peak_rss_growth_mb']:.0f} MB",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    if args.out:
        args.out.write_text(json.dumps({"code": str(args.code), "seconds": args.seconds, "runs": args.runs,
                                        "records": args.records, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
