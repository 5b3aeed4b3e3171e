"""The README's commands: the install and test commands CI runs, and the main job from a fresh install."""
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_commands():
    block = re.search(r"## Install, test, run\s+```bash\n(.*?)```", README, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_gives_install_test_and_main_job_and_ci_runs_them():
    install, test, main_job = readme_commands()
    assert install.startswith("pip install -e") and test == "python -m pytest -n auto --dist loadscope" and main_job == "cnnlab demo"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pip install" in ci and '-e ".[test]"' in ci and install.endswith('-e ".[test]"')
    assert ci.strip().splitlines()[-1] == test


def test_learn_table_is_the_lessons_outline_and_the_explain_index():
    """The README's "Learn" table names each question's steps by the outline's numbers and titles, exactly the
    steps the outline says answer it, and the explain pages under the steps the index puts them."""
    from cnnlab.analysis.lesson import outline
    from cnnlab.explain.index import LESSON_STEP
    steps = outline()
    by_number = {s["step"]: s for s in steps}
    section = README[README.index("## Learn"):README.index("## A first example")]
    rows = re.findall(r"^\| (Q\d)\. [^|]+\| ([^|]+)\| ([^|]+)\|$", section, re.M)
    assert [q for q, _, _ in rows] == ["Q1", "Q2", "Q3", "Q4"]
    for q, named, pages in rows:
        listed = {int(n): t.strip(" ,") for n, t in re.findall(r"(\d+) ([^;]+?)(?=, \d+ |;|$)", named.strip())}
        assert set(listed) == {s["step"] for s in steps if q in s["questions"]}, q
        assert all(by_number[n]["title"] == t for n, t in listed.items()), (q, listed)
        for page, number in re.findall(r"`([a-z-]+)` \((?:step )?(\d+)\)", pages):
            assert by_number[int(number)]["id"] == LESSON_STEP[page], (q, page)
    assert "docs/lesson-01-vector.png" in section and f"docs/lesson-14-{by_number[14]['id']}.png" in section


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
def test_fresh_virtual_environment_runs_the_main_job(tmp_path):
    """Install a copy of the source (not editable) into a new virtual environment and run the main job.

    The environment sees the packages of the interpreter running the tests (NumPy, Pillow, pip, the
    setuptools the test extra installs...), whether that is a virtual environment or not, so no network
    is needed; what is checked is cnnlab's own packaging: the package, its data and the console script.
    """
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", "build")

    def ignore(folder, names):                  # the checkout's own run directories, not the package cnnlab/runs
        return skip(folder, names) | ({"runs"} if Path(folder) == ROOT else set())

    shutil.copytree(ROOT, src, ignore=ignore)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    bindir = env_dir / "bin"
    python = bindir / "python"
    # ``system_site_packages`` would show the *base* interpreter's packages, not those of a virtual
    # environment the tests run in: list this interpreter's package folders instead, after the new
    # environment's own (plain paths: their .pth files, e.g. an editable cnnlab, are not run).
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in sys.path if p and Path(p).is_dir() and Path(p).name in ("site-packages", "dist-packages")]
    Path(inner, "outer-packages.pth").write_text("".join(f"{p}\n" for p in outer))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--disable-pip-version-check", str(src)], capture_output=True, text=True, env=env,
                             timeout=300)
    assert install.returncode == 0, install.stderr
    where = subprocess.run([str(python), "-c", "import cnnlab; print(cnnlab.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=60)
    assert str(env_dir) in where.stdout, where                     # the installed copy, not the checkout
    demo = subprocess.run([str(bindir / "cnnlab"), "demo", "--out", str(tmp_path / "run"), "--epochs", "1"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert "test accuracy" in demo.stdout and (tmp_path / "run" / "model.safetensors").is_file()
