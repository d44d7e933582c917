"""Executes notebooks/probe.ipynb top to bottom on a tiny checkpoint trained in this process."""

import importlib
import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "probe.ipynb"


def _kernelspec(root: Path) -> str:
    """A kernelspec running this interpreter (works in any fresh venv with ipykernel)."""
    spec = root / "kernels" / "jaxav-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "jaxav test", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return "jaxav-test"


def test_probe_notebook_executes(tmp_path, monkeypatch):
    nbformat = importlib.import_module("nbformat")
    nbclient = importlib.import_module("nbclient")
    importlib.import_module("ipykernel")
    from jaxav.config_defaults import base_config
    from jaxav.train.trainer import train

    c = base_config()
    c.data.data_dir = str(tmp_path / "tfds")
    c.data.num_frames, c.data.num_mel_bins = 64, 32
    c.data.synth.update(num_unlabeled=16, num_train=32, num_validation=0, num_test=16,
                        clip_seconds=0.7)  # fmt: skip
    c.model.width, c.model.depth, c.model.num_heads = 32, 2, 2
    c.train.num_steps, c.train.batch_size, c.train.progress_bar = 2, 8, False
    c.checkpoint.every_steps, c.checkpoint.async_save = 2, False
    c.probe.steps, c.probe.l2_grid = 20, (1e-2,)
    train(c, tmp_path / "run")

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JAXAV_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("JAXAV_SMALL", "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # inline figures in the kernel
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    kernel = _kernelspec(tmp_path / "jupyter")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text = "".join(o.get("text", "") for cell in nb.cells for o in cell.get("outputs", []))
    assert "best layer" in text and "skipped" in text
    images = [
        o for cell in nb.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 3  # reconstructions, PCA, per-layer plot
    assert (tmp_path / "run" / "probe" / "notebook" / "probe.json").exists()
