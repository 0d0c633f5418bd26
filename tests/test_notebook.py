"""The Colab demo runs headless, top to bottom, at the quickstart's tiny size (so it cannot rot)."""

import os

import nbformat
from nbclient import NotebookClient

from dalle_jax import runtime_setup
from tests.helpers.paths import ROOT
from tests.helpers.xla_flags import xla_flags


def test_colab_demo_runs_and_draws(tmp_path, monkeypatch):
    # The first cell installs requirements.txt where its pins are not met: refuse to run it here
    # rather than let it replace this environment's JAX.
    assert runtime_setup.installed(os.path.join(ROOT, "requirements.txt")), (
        "this environment does not hold requirements.txt's JAX and libraries; the notebook's "
        "first cell would install them into it")
    nb = nbformat.read(os.path.join(ROOT, "experiments", "colab_demo.ipynb"), as_version=4)
    work = tmp_path / "work"
    monkeypatch.setenv("DEMO_PRESET", "tiny")
    monkeypatch.setenv("DEMO_WORKDIR", str(work))
    monkeypatch.setenv("DEMO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", xla_flags(1))  # one CPU device, as in Colab
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": os.path.join(ROOT, "experiments")}}).execute()
    for name in ("samples.png", "prompt.png", "prompt.json", "completed.png"):
        assert (work / name).stat().st_size > 0, name
    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # samples, prompt grid, start image, completions
