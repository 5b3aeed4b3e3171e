"""The notebooks of docs/notebooks, executed top to bottom in a real Jupyter kernel (nbclient + ipykernel), and
what cnnlab does inside a kernel: ``fit``'s bar and live curve, one process by default.

Each notebook ends with a cell asserting its key results as relations with margins; any error or failed
assertion fails the test. Data: ``$CNNLAB_DATA`` is set to ``../shared/data`` when that folder exists, else the
notebooks use the project's download code. Needs the ``notebook`` extra and nbclient (in ``[test]``).
"""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook runner: pip install nbclient")
nbclient = pytest.importorskip("nbclient", reason="the notebook runner: pip install nbclient")
pytest.importorskip("ipykernel", reason='a Jupyter kernel: pip install "cnnlab[notebook]"')

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
SHARED = ROOT.parent / "shared" / "data"
NEEDS = {"4_look_inside_a_pytorch_model.ipynb": ("torch", "onnx")}


def execute(nb, cwd, monkeypatch):
    """Run every cell in a fresh kernel started in ``cwd``; raises on the first error."""
    if SHARED.is_dir():
        monkeypatch.setenv("CNNLAB_DATA", str(SHARED))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    monkeypatch.setenv("MPLBACKEND", "agg")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def outputs(cell, kind=None):
    return [o for o in cell.get("outputs", []) if kind is None or o["output_type"] == kind]


def test_notebooks_are_there_and_kept_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["1_how_convolution_works.ipynb", "2_why_it_works.ipynb",
                                           "3_train_your_own.ipynb", "4_look_inside_a_pytorch_model.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: outputs in git"
        assert "assert" in code[-1].source and "all checks passed" in code[-1].source, path.name
        text = "\n".join(c.source for c in nb.cells)
        assert "shared/data" not in text and "../" not in text, f"{path.name}: data from a path, not $CNNLAB_DATA"
    first = nbformat.read(NOTEBOOKS[3], as_version=4).cells[0].source
    assert "needs PyTorch" in first and "dynamo=False" in "".join(c.source for c in nbformat.read(NOTEBOOKS[3], 4).cells)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    for module in NEEDS.get(path.name, ()):
        pytest.importorskip(module, reason=f"{path.name} needs {module}")
    nb = execute(nbformat.read(path, as_version=4), tmp_path, monkeypatch)
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert "all checks passed" in "".join(o.get("text", "") for o in outputs(last, "stream"))


def test_inside_a_kernel_fit_runs_in_one_process_with_the_notebook_bar_and_the_live_curve(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "import os, numpy as np, cnnlab, cnnlab.notebook, cnnlab.parallel\n"
        "from cnnlab.layers import Dense, Flatten\n"
        "print(cnnlab.notebook.in_notebook(), cnnlab.parallel.default_workers())",
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.uniform(0, 1, (256, 6, 6, 1)).astype(np.float32), rng.integers(0, 3, 256)\n"
        "model = cnnlab.Sequential([Flatten(), Dense(3)], input_shape=(6, 6, 1))\n"
        "history = model.fit(x, y, epochs=2, batch_size=32, verbose=1, live=0.001)\n"
        "print('epochs', len(history['loss']))",
        "model")]
    nb = execute(nb, tmp_path, monkeypatch)
    first, fit, shown = nb.cells
    assert outputs(first, "stream")[0]["text"].split() == ["True", "1"]        # a kernel: one process by default
    kinds = [set(o.get("data", {})) for o in outputs(fit, "display_data")]
    assert any("image/png" in k for k in kinds)                                 # the live loss curve
    assert any("application/vnd.jupyter.widget-view+json" in k for k in kinds)  # tqdm's notebook bar
    assert "epochs 2" in "".join(o.get("text", "") for o in outputs(fit, "stream"))
    assert "<table>" in outputs(shown, "execute_result")[0]["data"]["text/html"]
