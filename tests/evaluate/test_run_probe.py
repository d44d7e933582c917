"""End-to-end `run_probe` / `jaxav probe` on a tiny SSAST checkpoint trained on an 8-device mesh."""

import json

import numpy as np
import pytest

from jaxav.errors import CheckpointError, DatasetError
from jaxav.evaluate import report
from jaxav.evaluate import run_probe as rp
from jaxav.evaluate.features import SplitFeatures


def tiny_config(data_dir: str, **synth):
    """ViT width 32, depth 2, 64 frames x 32 mel bins, a tiny synth_av, 4 steps on 8 devices."""
    from jaxav.config_defaults import base_config

    c = base_config()
    c.data.data_dir = data_dir
    c.data.num_frames, c.data.num_mel_bins = 64, 32
    sizes = dict(num_unlabeled=16, num_train=48, num_validation=0, num_test=24, clip_seconds=0.9)
    c.data.synth.update({**sizes, **synth})
    c.model.width, c.model.depth, c.model.num_heads = 32, 2, 2
    c.mask.ratio = 0.5
    c.train.num_steps, c.train.batch_size, c.train.progress_bar = 4, 8, False
    c.optim.warmup_steps = 1
    c.checkpoint.every_steps, c.checkpoint.async_save = 2, False
    c.mesh.data = 8
    c.probe.batch_size, c.probe.steps, c.probe.l2_grid = 16, 30, (1e-3, 1e-1)
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from jaxav.train.trainer import train

    root = tmp_path_factory.mktemp("probe")
    config = tiny_config(str(root / "tfds"))
    train(config, root / "run")
    return root / "run", config


LAYERS = {"layer_1", "layer_2", "cls_1", "cls_2", "stats_layer_1", "stats_layer_2"}


def test_run_probe_writes_json_plot_and_table(trained, capsys):
    workdir, _ = trained
    rec = rp.run_probe(workdir, "synth_av", progress=False)
    out = workdir / "probe" / "synth_av"
    saved = json.loads((out / "probe.json").read_text())
    assert saved["best"]["layer"] == rec["best"]["layer"] in saved["layers"]
    assert 0.0 <= saved["best"]["accuracy"] <= 1.0 and "knn_accuracy" in saved["best"]
    assert saved["step"] == 4 and saved["dataset"] == "synth_av" and saved["num_skipped"] == 0
    assert set(saved["layers"]) == LAYERS
    assert saved["fusion"]["layers"] == ["layer_1", "layer_2"]  # mean-pooled sets only
    assert saved["protocol"]["validation"].startswith("20% of train")  # no validation split
    assert saved["num_clips"] == {"train": 48, "test": 24}
    assert saved["av_label"]["best"]["layer"] in saved["layers"]
    assert (out / "layers.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "step 4 (label)" in printed and "av_label" in printed
    again = rp.run_probe(workdir, "synth_av", step=2, out=workdir / "p2", progress=False)
    assert again["step"] == 2 and (workdir / "p2" / "probe.json").exists()


@pytest.mark.parametrize("baseline", ["random", "mfcc"])
def test_baselines(trained, baseline):
    workdir, _ = trained
    rec = rp.run_probe(workdir, "synth_av", baseline=baseline, progress=False)
    saved = json.loads((workdir / "probe" / f"synth_av-{baseline}" / "probe.json").read_text())
    assert saved["baseline"] == baseline and saved["best"] == rec["best"]
    if baseline == "mfcc":
        assert list(saved["layers"]) == ["mfcc"] and saved["best"]["layer"] == "mfcc"
    else:
        assert set(saved["layers"]) == LAYERS


def test_random_encoder_is_the_step0_init(trained):
    import jax

    from jaxav.data.pipeline import ExampleSpec
    from jaxav.evaluate.features import probe_mesh
    from jaxav.train import step as step_lib
    from jaxav.train.optim import make_optimizer

    _, config = trained
    enc = rp.random_encoder(config, mesh=probe_mesh(jax.devices()[:1]))
    spec = ExampleSpec(num_frames=64, num_mel_bins=32)
    state, _ = step_lib.init_state(enc.model, make_optimizer(config.optim, 4),
                                   probe_mesh(jax.devices()[:1]), step_lib.dummy_batch(spec, 1),
                                   config.seed)  # fmt: skip
    a, b = (
        jax.tree.leaves(jax.device_get(enc.params)),
        jax.tree.leaves(jax.device_get(state.params)),
    )
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bad_inputs(trained, tmp_path):
    workdir, config = trained
    with pytest.raises(CheckpointError, match="no checkpoint"):
        rp.run_probe(tmp_path / "empty", "synth_av")
    with pytest.raises(CheckpointError, match=r"available steps: \[2, 4\]"):
        rp.run_probe(workdir, "synth_av", step=3)
    other = tiny_config(config.data.data_dir)
    other.model.width = 48
    with pytest.raises(CheckpointError, match="model.width"):
        rp.run_probe(workdir, "synth_av", config=other)
    with pytest.raises(Exception, match="baseline"):
        rp.run_probe(workdir, "synth_av", baseline="pca")
    # A folder dataset with a train split only.
    import soundfile as sf

    for label in ("a", "b"):
        (tmp_path / "sounds" / "train" / label).mkdir(parents=True)
        for i in range(2):
            tone = 0.3 * np.sin(np.linspace(0, 400 * (i + 1), 8000)).astype(np.float32)
            sf.write(tmp_path / "sounds" / "train" / label / f"{i}.wav", tone, 16000)
    with pytest.raises(DatasetError, match="'test' split"):
        rp.run_probe(workdir, "audio_folder", source=str(tmp_path / "sounds"),
                     data_dir=str(tmp_path / "tfds"), progress=False)  # fmt: skip


def _split(y, **feats):
    n = len(y)
    return SplitFeatures(
        {k: np.asarray(v, np.float32) for k, v in feats.items()} or {"x": np.ones((n, 2))},
        {"label": np.asarray(y)}, np.arange(n),
    )  # fmt: skip


def test_single_class_and_unlabelled_are_dataset_errors():
    feats = {"train": _split([0, 0, 0, 0]), "test": _split([0, 1])}
    with pytest.raises(DatasetError, match="single class"):
        rp.probe_task(feats, "label", multi_label=False, config_probe={})
    feats = {"train": _split([-1, -1]), "test": _split([0, 1])}
    with pytest.raises(DatasetError, match="no clips labelled"):
        rp.probe_task(feats, "label", multi_label=False, config_probe={})


def test_av_retrieval_on_paired_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 8))
    video = a + 0.01 * rng.normal(size=a.shape)
    test = _split(np.zeros(20, int), audio_layer_1=rng.normal(size=(20, 8)), audio_layer_2=a,
                  video_layer_2=video, video_layer_1=a[::-1])  # fmt: skip
    r = rp.retrieval(test)
    assert r["audio_to_video"] == {"r1": 1.0, "r5": 1.0, "num": 20}
    assert r["video_to_audio"]["r1"] == 1.0


def test_cli_probe_errors_are_one_line(tmp_path, capsys):
    from jaxav.cli import main

    assert main(["probe", "--workdir", str(tmp_path), "--dataset", "synth_av"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "Traceback" not in err


def test_table_gathers_the_earlier_baseline_runs(tmp_path):
    """The last of `jaxav probe` and its --baseline runs prints all three side by side."""
    layer = {"accuracy": 0.5, "val_accuracy": 0.5, "knn_accuracy": 0.4}

    def record(baseline, acc):
        best = {**layer, "layer": "mfcc" if baseline == "mfcc" else "layer_1", "accuracy": acc}
        return {"dataset": "synth_av", "baseline": baseline, "step": 9, "layers": {"x": layer},
                "best": best, "av_label": {"layers": {"x": layer}, "best": best}}  # fmt: skip

    probe_dir = tmp_path / "probe"
    written = {
        "synth_av-mfcc": record("mfcc", 0.7),
        "other-random": record("random", 0.1),  # another dataset's folder
        "synth_av-random": {**record("random", 0.6), "dataset": "other"},  # another dataset
    }
    for folder, rec in written.items():
        (probe_dir / folder).mkdir(parents=True)
        (probe_dir / folder / "probe.json").write_text(json.dumps(rec))
    (probe_dir / "synth_av").mkdir()
    (probe_dir / "synth_av" / "probe.json").write_text("{not json")
    others = rp.sibling_records(tmp_path, "synth_av", probe_dir / "synth_av")
    assert [r["baseline"] for r in others] == ["mfcc"]  # wrong dataset / unreadable: left out
    rows = rp.table_rows(record(None, 0.9), others)
    assert list(rows) == ["step 9 (label)", "step 9 (av_label)", "mfcc (label)", "mfcc (av_label)"]
    table = report.format_table(rows)
    assert "90.0" in table and "70.0" in table
    rows = rp.table_rows(record("mfcc", 0.7), [record("random", 0.6), record(None, 0.9)])
    assert [k for k in rows if k.endswith("(label)")] == ["step 9 (label)", "random (label)",
                                                           "mfcc (label)"]  # fmt: skip
