"""Screenshots of every lesson step, as a learner sees them: ``docs/lesson-NN-<id>.png``.

    python docs/lesson_screenshots.py [--data-dir DIR] [--runs DIR] [--out docs]

Starts ``cnnlab serve`` with no model (the default subject: MNIST when ``--data-dir``, ``$CNNLAB_DATA`` or the
cache holds it, else the built-in shapes), waits until the lesson's comparison models are trained, then walks
the steps with Playwright and Debian's chromium at 1280x800 on the first test image, answering each
question (its first choice) so that its figures show. Needs the ``serve`` extra and ``playwright``.
"""
import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "cnnlab", "serve", "--port", str(port), "--runs", args.runs]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    server = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}/"
    try:
        from playwright.sync_api import sync_playwright
        deadline = time.time() + 900                         # the default subject may train first
        while True:
            try:
                urllib.request.urlopen(url + "api/model", timeout=5)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "#view=lesson&step=1")
            while True:                                      # the comparison models, trained in the background
                state = json.loads(urllib.request.urlopen(url + "api/lesson").read())["companions"] or {}
                if all(c["status"] != "training" for c in state.values()):
                    break
                time.sleep(2)
            steps = json.loads(urllib.request.urlopen(url + "api/lesson").read())["steps"]
            for s in steps:
                page.goto(url + f"#view=lesson&step={s['step']}")
                page.wait_for_function(f"(() => {{ const a = document.getElementById('lesson-step'); return a &&"
                                       f" a.dataset.step === '{s['step']}' && !a.hasAttribute('aria-busy'); }})()",
                                       timeout=60_000)
                choices = page.locator("#lesson-step button.choice")
                if choices.count():                          # a question first: answer it, the figures show
                    choices.first.click()
                page.wait_for_timeout(600)
                path = Path(args.out) / f"lesson-{s['step']:02d}-{s['id']}.png"
                page.screenshot(path=str(path), full_page=True)
                print(path)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
