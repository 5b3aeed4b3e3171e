"""``cnnlab serve`` on the command line: the missing extra, the served host names, a real server on a socket."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import cnnlab
from cnnlab.cli import main
from cnnlab.serve.cli import allowed_hosts


def test_missing_extra_is_one_line_naming_the_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "starlette", None)          # import starlette now fails
    assert main(["serve", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("cnnlab: error:") and 'pip install "cnnlab[serve]"' in err


def test_allowed_hosts():
    assert set(allowed_hosts("127.0.0.1")) >= {"127.0.0.1", "localhost"}
    assert allowed_hosts("192.168.1.5") == ("192.168.1.5",)
    assert allowed_hosts("0.0.0.0") is None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, runs_dir, stderr):
    """``python -m cnnlab serve MODEL`` on a free port: ``(process, port)``."""
    pytest.importorskip("uvicorn")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", model, "--port", str(port), "--runs",
                             str(runs_dir)], stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, port


@pytest.mark.slow
def test_server_on_a_socket(tmp_path):
    """A zoo model served by ``python -m cnnlab serve``: the URL is printed, the API answers, a foreign
    Host header is refused, Ctrl-C (SIGINT) stops it."""
    proc, port = start_server("lenet5", tmp_path, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stderr.read()
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=5) as r:
                    model = json.load(r)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert model["input_shape"] == [28, 28, 1] and len(model["layers"]) == 12
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/model", headers={"Host": f"rebound.example:{port}"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 403 and "Host" in json.load(e.value)["error"]
    finally:
        proc.send_signal(2)
        proc.wait(timeout=20)


def descendants(pid) -> set[int]:
    """Every process below ``pid`` (from /proc: each process's parent is the 4th field of its stat)."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        out |= kids
        todo += kids
    return out


def alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stops_with_a_job_running_and_a_stream_open(sig, tmp_path):
    """Ctrl-C (SIGINT) or SIGTERM ends ``cnnlab serve`` within 10 s while a training job runs and a
    client watches its event stream: the stream gets a last ``shutdown`` event, the command says in one
    line what happened to the job, the run keeps its checkpoint, and no process is left behind."""
    proc, port = start_server("tiny_cnn", tmp_path, stderr=subprocess.STDOUT)
    try:
        assert "(Ctrl-C stops)" in proc.stdout.readline()
        conn = None
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/")
                page = conn.getresponse()
                page.read()
                break
            except OSError:
                time.sleep(0.1)
        cookie = page.getheader("set-cookie").split(";")[0]
        conn.request("POST", "/api/runs", json.dumps(
            {"dataset": "shapes", "dataset_options": {"n_train": 2000, "n_test": 64}, "epochs": 500, "batch_size": 16}),
            {"Content-Type": "application/json", "Cookie": cookie})
        r = conn.getresponse()
        job = json.loads(r.read())
        assert r.status == 201, job
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        stream.request("GET", f"/api/runs/{job['id']}/events")
        events = stream.getresponse()
        while events.readline().strip() != b"event: batch":         # the job is training
            pass
        children = descendants(proc.pid)
        assert children, "the job's process is a child of the server"
        t0 = time.monotonic()
        proc.send_signal(sig)
        rest = events.read().decode()                                # until the server ends the stream
        out, _ = proc.communicate(timeout=10)
        took = time.monotonic() - t0
        assert proc.returncode == 0 and took < 10, (took, out)
        assert "event: shutdown" in rest
        lines = [line for line in out.splitlines() if line.startswith("cnnlab serve: stopped")]
        assert len(lines) == 1 and job["id"] in lines[0] and "keeps the checkpoint" in lines[0], out
        deadline = time.monotonic() + 5
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in children if alive(p)], "processes left behind"
        run = tmp_path / job["id"]                               # the last completed epoch's checkpoint stands
        epoch = json.loads((run / "state.json").read_text())["epoch"] if (run / "state.json").exists() else 0
        if epoch:
            assert cnnlab.load(run).num_params == cnnlab.models.tiny_cnn().num_params
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
