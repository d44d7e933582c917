"""`jaxav export` end to end on a tiny trained checkpoint: torch and HF folders, parity, errors."""

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = importlib.import_module("torch")
transformers = importlib.import_module("transformers")

from jaxav import cli  # noqa: E402
from jaxav.config_defaults import base_config  # noqa: E402
from jaxav.errors import CheckpointError, JaxavError  # noqa: E402
from jaxav.export import hf, load_torch, to_torch  # noqa: E402
from jaxav.export.torch_modules import EncoderConfig  # noqa: E402

STEPS = 2


def tiny_config(data_dir: str):
    """SSAST, ViT 32 wide x 2 deep, 2 cls tokens (HF-exportable), 64 x 32 inputs, 2 steps."""
    c = base_config()
    c.data.data_dir = data_dir
    c.data.num_frames, c.data.num_mel_bins = 64, 32
    c.data.synth.num_unlabeled, c.data.synth.num_train = 64, 16
    c.data.synth.num_validation, c.data.synth.num_test = 8, 8
    c.data.synth.clip_seconds = 1.0
    c.model.width, c.model.depth, c.model.num_heads = 32, 2, 2
    c.model.num_cls_tokens = 2
    c.model.patch_size, c.model.patch_stride = (16, 16), (16, 8)
    c.train.num_steps, c.train.batch_size = STEPS, 8
    c.train.log_every, c.train.progress_bar = 1, False
    c.optim.warmup_steps = 1
    c.checkpoint.every_steps, c.checkpoint.async_save = 1, False
    return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny checkpoint trained on the session's 8 simulated devices (steps 1 and 2)."""
    from jaxav.train.trainer import train

    root = tmp_path_factory.mktemp("export")
    train(tiny_config(str(root / "tfds")), root / "run")
    return root / "run"


def _worst(report: dict) -> float:
    return max(v for k, v in report.items() if "diff" in k)


def test_cli_torch_end_to_end(workdir, tmp_path):
    out = tmp_path / "torch"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # a one-device machine
    cmd = [
        sys.executable,
        "-m",
        "jaxav.cli",
        "export",
        "--workdir",
        str(workdir),
        "--out",
        str(out),
        "--format",
        "torch",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "parity.json",
    ]
    report = json.loads((out / "parity.json").read_text())
    assert report["passed"] and report["step"] == STEPS
    assert _worst(report) <= 1e-4
    assert set(report["layers"]) >= {"layer_1", "layer_2", "cls_1", "cls_2", "final"}
    assert all(set(v) == {"max_abs_diff", "max_rel_diff"} for v in report["layers"].values())
    assert report["other_lengths"]  # learned positions checked at another length too

    model = load_torch(out)
    frontend = model.export_config["frontend"]
    assert frontend["num_mel_bins"] == 32 and frontend["sample_rate"] == 16000
    assert frontend["mean"] is not None and frontend["std"] > 0
    with torch.no_grad():
        feats = model(torch.zeros(1, 100, 32))
    assert feats["layer_2"].shape == (1, 2 * 11, 32) and feats["cls_2"].shape == (1, 32)


def test_hf_folder_loads_and_matches(workdir, tmp_path):
    report = to_torch.export(workdir, tmp_path, fmt="hf", step=1, verbose=False)
    assert report["passed"] and report["step"] == 1 and _worst(report) <= 1e-4
    model = transformers.ASTModel.from_pretrained(str(tmp_path)).eval()
    c = model.config
    assert (c.max_length, c.num_mel_bins, c.patch_size) == (64, 32, 16)
    assert (c.frequency_stride, c.time_stride, c.layer_norm_eps) == (16, 8, 1e-6)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (32, 2, 2)
    assert c.intermediate_size == 128 and c.hidden_act == "gelu"

    # Hidden states of the folder vs jaxav on a fresh input.
    from jaxav.train.checkpoint import restore_params

    config, params, _ = restore_params(workdir, 1)
    audio = np.random.default_rng(5).standard_normal((1, 64, 32)).astype(np.float32)
    want = to_torch.reference_features(config, params, audio)
    with torch.no_grad():
        o = model(torch.from_numpy(audio), output_hidden_states=True)
    for i in (1, 2):
        np.testing.assert_allclose(o.hidden_states[i][:, 2:], want[f"layer_{i}"], atol=1e-4)
    np.testing.assert_allclose(o.pooler_output, want["final_cls"], atol=1e-4)

    fe = transformers.ASTFeatureExtractor.from_pretrained(str(tmp_path))
    frontend = json.loads((tmp_path / hf.INFO_FILE).read_text())["frontend"]
    assert (fe.mean, fe.std, fe.max_length) == (frontend["mean"], frontend["std"], 64)
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    x = fe(wave, sampling_rate=16000, return_tensors="pt").input_values
    assert tuple(x.shape) == (1, 64, 32) and torch.isfinite(model(x).last_hidden_state).all()


def test_hf_refuses_inexact_configs():
    frontend = {"mean": -4.0, "std": 4.0}
    ok = EncoderConfig("vit", 32, 2, (16, 16), (16, 16), (2, 4), num_cls_tokens=2, num_heads=2)
    hf.check_exportable(ok, frontend)
    for bad, words in [
        (dict(num_cls_tokens=1), "2 (cls + distillation)"),
        (dict(num_cls_tokens=0), "num_cls_tokens = 2"),
        (dict(patch_size=(32, 2)), "not square"),
        (dict(encoder="mamba"), "ViT"),
    ]:
        with pytest.raises(to_torch.ExportError, match=r"(?s)ASTModel.*" + re.escape(words)):
            hf.check_exportable(EncoderConfig(**{**vars(ok), **bad}), frontend)
    with pytest.raises(to_torch.ExportError, match="mean/std"):
        hf.check_exportable(ok, {"mean": None, "stats_unavailable": "no dataset"})


def test_parity_failure_is_loud(workdir, tmp_path, monkeypatch):
    real = to_torch.to_torch_state

    def corrupt(params, cfg):
        state = real(params, cfg)
        state["blocks.1.mlp.fc2.bias"] = state["blocks.1.mlp.fc2.bias"] + 1e-3
        return state

    monkeypatch.setattr(to_torch, "to_torch_state", corrupt)
    with pytest.raises(to_torch.ParityError, match="layer_2"):
        to_torch.export(workdir, tmp_path, verbose=False)
    report = json.loads((tmp_path / "parity.json").read_text())
    assert not report["passed"] and report["layers"]["layer_1"]["max_abs_diff"] < 1e-4
    assert issubclass(to_torch.ParityError, JaxavError)


def test_bad_inputs(workdir, tmp_path, monkeypatch, capsys):
    with pytest.raises(CheckpointError, match=r"step 99.*available steps: \[1, 2\]"):
        to_torch.export(workdir, tmp_path / "a", step=99)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        to_torch.export(tmp_path / "empty", tmp_path / "b")
    assert (
        cli.main(["export", "--workdir", str(tmp_path / "empty"), "--out", str(tmp_path / "c")])
        != 0
    )
    assert "no checkpoint" in capsys.readouterr().err

    from jaxav.train import checkpoint

    real = checkpoint.restore_params

    def unknown(*args, **kwargs):
        config, params, step = real(*args, **kwargs)
        config.unlock()
        config.model.name = "no_such_model"
        return config, params, step

    monkeypatch.setattr(checkpoint, "restore_params", unknown)
    with pytest.raises(CheckpointError, match="no_such_model"):
        to_torch.export(workdir, tmp_path / "d")
    assert not Path(tmp_path / "d" / "parity.json").exists()
