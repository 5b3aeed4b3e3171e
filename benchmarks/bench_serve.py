"""Latency of the explorer's ``POST /api/predict`` (``cnnlab serve``), p50 and p99 in milliseconds.

For LeNet-5 (28x28x1) and ``cifar_small`` (32x32x3), each served by its own ``cnnlab serve``
process on 127.0.0.1: one client sending requests one after another, then 16 clients at
once, then both again while a training job (started through ``POST /api/runs``, in its own
process) trains. Also the page's request, ``?activations=base64`` (every layer's output), with
one client. Every client keeps one HTTP/1.1 connection open, as a browser does.

    python benchmarks/bench_serve.py [--requests 200] [--models lenet5,cifar_small]

Target: p50 < 50 ms for LeNet-5 with one client; the page usable while training.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_png(shape, seed=0) -> bytes:
    h, w, c = shape
    a = (np.random.default_rng(seed).uniform(0, 1, (h, w, c)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if c == 1 else a).save(buf, format="PNG")
    return buf.getvalue()


COOKIE = {}          # the server's secret, as its page receives it (every POST needs it)


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers={**COOKIE, **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data)


def client(port, path, body, n, out):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    request(conn, "POST", path, body)                   # warm the connection
    for _ in range(n):
        t = time.perf_counter()
        request(conn, "POST", path, body, {"Content-Type": "image/png"})
        out.append(1000 * (time.perf_counter() - t))
    conn.close()


def measure(port, path, body, clients, total):
    lat: list[float] = []
    threads = [threading.Thread(target=client, args=(port, path, body, max(1, total // clients), lat))
               for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    a = np.array(lat)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "n": len(a),
            "per_sec": len(a) / wall}


def serve(model, runs_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", model, "--port", str(port), "--runs", runs_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            shape = request(conn, "GET", "/api/model")["input_shape"]
            conn.request("GET", "/")
            page = conn.getresponse()
            page.read()
            COOKIE["Cookie"] = page.getheader("set-cookie").split(";")[0]
            conn.close()
            return proc, port, shape
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"cnnlab serve {model} did not start: {proc.stdout.read()}")
            time.sleep(0.2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200, help="requests per measurement (default 200)")
    p.add_argument("--models", default="lenet5,cifar_small")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as runs_dir:
        for model in args.models.split(","):
            proc, port, shape = serve(model, runs_dir)
            try:
                body = image_png(shape)
                for training in (False, True):
                    if training:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                        job = request(conn, "POST", "/api/runs", json.dumps(
                            {"dataset": "shapes", "model": "lenet5", "epochs": 100, "workers": 1,
                             "dataset_options": {"n_train": 3000, "n_test": 100}}),
                            {"Content-Type": "application/json"})["id"]
                        conn.close()
                        time.sleep(3)                              # past process start and data generation
                    for clients in (1, 16):
                        r = measure(port, "/api/predict", body, clients, args.requests)
                        rows.append((model, clients, "yes" if training else "no", "probabilities", r))
                    if not training:
                        r = measure(port, "/api/predict?activations=base64", body, 1, args.requests)
                        rows.append((model, 1, "no", "every layer's output", r))
                    if training:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                        state = request(conn, "POST", f"/api/runs/{job}/stop", b"")
                        conn.close()
                        if state["status"] != "running":
                            raise RuntimeError(f"the training job ended before the measurement did: {state}")
            finally:
                proc.send_signal(2)
                proc.wait(timeout=30)
    print(f"{'model':12} {'clients':>7} {'training':>8}  {'answer':22} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7}")
    for model, clients, training, what, r in rows:
        print(f"{model:12} {clients:7d} {training:>8}  {what:22} {r['p50']:7.1f} {r['p99']:7.1f} {r['per_sec']:7.0f}")


if __name__ == "__main__":
    main()
