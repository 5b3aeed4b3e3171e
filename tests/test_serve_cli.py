"""``cnnlab serve`` on the command line: the missing extra, the served host names, a real server on a socket."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

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


@pytest.mark.slow
def test_server_on_a_socket(tmp_path):
    """A zoo model served by ``python -m cnnlab serve``: the URL is printed, the API answers, a foreign
    Host header is refused, Ctrl-C (SIGINT) stops it."""
    pytest.importorskip("uvicorn")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", "lenet5", "--port", str(port), "--runs",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
