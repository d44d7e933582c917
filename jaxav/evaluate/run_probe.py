"""`jaxav probe`: linear probes and kNN on a checkpoint's frozen features, per layer.

    jaxav probe --workdir runs/quickstart --dataset synth_av [--baseline random|mfcc]

Restores the encoder (params alone, onto every local device), opens the dataset (preparing it on
the fly), embeds train / validation / test with whole-clip windowing (`features.embed_split`),
holds out 20% of train for validation when the dataset has no validation split, and runs
`probe.probe_all_layers`. Writes `OUT/probe.json` (every number, the step, the dataset, the
protocol, skipped clips; the headline under `best`) and `OUT/layers.png`, and prints a table.
Baselines: `random` = the same encoder at its random init (same config and seed), `mfcc` =
`baselines.mfcc_features` (one feature set named `mfcc`), both through the same classifier.
synth_av also probes `av_label` (needs both modalities); audio-visual checkpoints
(`data.with_video`) add audio<->video retrieval recall@1/5 on the test split.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from jaxav.data import pipeline
from jaxav.errors import ConfigError, DatasetError
from jaxav.evaluate import baselines, metrics, probe, report
from jaxav.evaluate.features import (
    Encoder,
    SplitFeatures,
    embed_split,
    labels_of,
    load_encoder,
    probe_mesh,
    wave_of,
)
from jaxav.models.registry import build_model
from jaxav.train import sharding as shd

BASELINES = ("random", "mfcc")
SPLITS = ("train", "validation", "test")
MAX_LISTED_FAILURES = 100


def random_encoder(config, *, mesh=None, seed: int | None = None) -> Encoder:
    """The encoder of `config` at random init: the params training started from (same seed).

    Args:
      config: full config; `seed` defaults to `config.seed`, split as `train.step.init_state`
        splits it, so these are the step-0 params of the run.
      mesh: where the params are replicated (default: every device).
    """
    mesh = probe_mesh() if mesh is None else mesh
    model = build_model(config)
    d = config.data
    batch = {"audio": jnp.zeros((1, d.num_frames, d.num_mel_bins), jnp.float32)}
    if d.with_video:
        batch["video"] = jnp.zeros((1, d.video_frames, d.video_size, d.video_size, 3))
        batch["has_video"] = jnp.ones((1,), bool)
    seed = int(config.seed if seed is None else seed)

    def init(rng):
        k_params, k_mask, k_drop, _ = jax.random.split(rng, 4)
        rngs = {"params": k_params, "mask": k_mask, "dropout": k_drop}
        return nn.unbox(model.init(rngs, batch, train=False)["params"])

    params = jax.jit(init, out_shardings=shd.replicated(mesh))(jax.random.PRNGKey(seed))
    return Encoder(config, model, params, None, mesh)


def open_probe_dataset(config, dataset: str, source: str | None, data_dir: str | None):
    """The `PreparedDataset` to probe on, prepared now when it is not yet.

    When `dataset` is the one the checkpoint trained on, missing `source` / `data_dir` come from
    its config, and synth_av uses the config's `data.synth` sizes and seed.
    """
    from jaxav.data.prepare import prepare_dataset
    from jaxav.train.trainer import dataset_options

    options: dict[str, Any] = {}
    if dataset == config.data.dataset:
        source = source or config.data.source or None
        data_dir = data_dir or config.data.data_dir or None
        options = dataset_options(config.data)
    return prepare_dataset(dataset, source=source, data_dir=data_dir, **options)


class _MfccClip:
    """grain map fn: split position -> (position, {"mfcc": float32[80], labels} or error text)."""

    def __init__(self, source, num_classes: int, sample_rate: int):
        self.source, self.num_classes, self.sample_rate = source, num_classes, sample_rate

    def __call__(self, i: int):
        try:
            example = self.source[int(i)]
            feats = baselines.mfcc_features(wave_of(example), self.sample_rate)
            return int(i), {"mfcc": feats, **labels_of(example, self.num_classes)}
        except Exception as e:  # noqa: BLE001 - a clip that fails is skipped and counted
            return int(i), f"{type(e).__name__}: {e}"


def mfcc_split(source, spec: pipeline.ExampleSpec) -> SplitFeatures:
    """The MFCC baseline's features of a split: {"mfcc": float32[N, 80]} (whole clips)."""
    items = grain.MapDataset.range(len(source)).map(
        _MfccClip(source, spec.num_classes, spec.sample_rate)
    )
    kept, failures = [], []
    for i, item in items.to_iter_dataset():
        (failures.append((i, item)) if isinstance(item, str) else kept.append((i, item)))
    stack = lambda k: np.stack([e[k] for _, e in kept])
    keys = [k for k in (kept[0][1] if kept else {}) if k != "mfcc"]
    return SplitFeatures(
        {"mfcc": stack("mfcc") if kept else np.zeros((0, 80), np.float32)},
        {k: stack(k) for k in keys},
        np.asarray([i for i, _ in kept], np.int64),
        len(failures),
        failures,
        len(kept),
    )


def _targets(split: SplitFeatures, task: str, multi_label: bool):
    """(features, y) of the labelled clips of a split for `task` ("label" or "av_label")."""
    if task == "label" and multi_label:
        y = split.labels.get("labels")
        keep = np.ones(len(split.index), bool)
    else:
        y = split.labels.get(task)
        keep = np.zeros(len(split.index), bool) if y is None else y >= 0
    if y is None:
        return {k: v[:0] for k, v in split.features.items()}, np.zeros(0, np.int64)
    return {k: v[keep] for k, v in split.features.items()}, y[keep]


def probe_task(feats: dict[str, SplitFeatures], task: str, *, multi_label: bool, config_probe):
    """`probe_all_layers` for one label kind; validation held out of train when missing.

    Raises:
      DatasetError when train or test has no labelled clip or train has a single class.
    """
    x_tr, y_tr = _targets(feats["train"], task, multi_label)
    x_te, y_te = _targets(feats["test"], task, multi_label)
    for name, y in (("train", y_tr), ("test", y_te)):
        if len(y) == 0:
            raise DatasetError(f"the {name} split has no clips labelled with `{task}` to probe")
    classes = np.unique(y_tr.argmax(-1) if multi_label else y_tr)
    if (multi_label and y_tr.sum(0).astype(bool).sum() < 2) or len(classes) < 2:
        raise DatasetError(
            f"the train split has a single class for `{task}` ({classes.tolist()}): a probe needs "
            "at least two"
        )
    x_va, y_va = (
        _targets(feats["validation"], task, multi_label) if "validation" in feats else ({}, [])
    )
    validation = "validation split"
    if len(y_va) == 0:
        x_tr, y_tr, x_va, y_va = probe.split_validation(x_tr, y_tr)
        validation = "20% of train held out (stratified)"
    out = probe.probe_all_layers(
        x_tr, x_va, x_te, y_tr, y_va, y_te, multi_label=multi_label, config_probe=config_probe
    )
    out["protocol"]["validation"] = validation
    return out


def _by_modality(result: dict) -> dict:
    """Best layer (by validation) among each prefix's sets (`audio_`, `video_`, `fused_`)."""
    metric = result["protocol"]["metric"]
    out = {}
    for prefix in ("audio", "video", "fused"):
        names = [n for n in result["layers"] if n.startswith(prefix + "_")]
        if names:
            best = max(names, key=lambda n: np.nan_to_num(result["layers"][n][f"val_{metric}"]))
            out[prefix] = {"layer": best, **result["layers"][best]}
    return out


def retrieval(test: SplitFeatures) -> dict:
    """Audio<->video recall@1/5 of the pooled final-layer features of the test split."""
    num = lambda n: int(re.search(r"(\d+)$", n).group(1))
    last = lambda p: max((n for n in test.features if re.fullmatch(p + r"_layer_\d+", n)), key=num)
    a, v = test.features[last("audio")], test.features[last("video")]
    if a.shape != v.shape:
        return {"error": f"audio {a.shape} and video {v.shape} features differ in width"}
    return {
        "audio_to_video": metrics.retrieval_recall(a, v),
        "video_to_audio": metrics.retrieval_recall(v, a),
    }


def run_probe(
    workdir,
    dataset: str,
    *,
    source: str | None = None,
    data_dir: str | None = None,
    step: int | None = None,
    out=None,
    baseline: str | None = None,
    config=None,
    mesh=None,
    progress: bool = True,
) -> dict:
    """Probes a checkpoint's features on `dataset` and writes `OUT/probe.json` and `layers.png`.

    Args:
      workdir: the training workdir; step: checkpoint step (default: latest).
      dataset, source, data_dir: the dataset to probe (prepared on the fly when needed).
      out: output folder (default `WORKDIR/probe/<dataset>[-<baseline>]`).
      baseline: None, "random" (the encoder at random init) or "mfcc".
      config: optional; the checkpoint's model must match it (else CheckpointError).
      mesh: devices to embed on (default: all, data parallel).
      progress: tqdm bars while embedding.

    Returns:
      the dict written to probe.json (`best.layer`, `best.accuracy` or `best.map`, ...).

    Raises:
      CheckpointError (no checkpoint, missing step, other model), DatasetError (no train / test
      split, no labels, a single class), ConfigError (unknown baseline).
    """
    if baseline not in (None, *BASELINES):
        raise ConfigError(f"--baseline must be one of {BASELINES}, got {baseline!r}")
    encoder = load_encoder(workdir, step, mesh=mesh, config=config)
    cfg = encoder.config
    ds = open_probe_dataset(cfg, dataset, source, data_dir)
    for split in ("train", "test"):
        if not ds.splits.get(split):
            raise DatasetError(
                f"dataset {dataset} has no (or an empty) '{split}' split to probe on "
                f"(splits: {', '.join(f'{k}={v}' for k, v in ds.splits.items())})"
            )
    if baseline == "random":
        encoder = random_encoder(cfg, mesh=encoder.mesh)
    spec = pipeline.spec_from_config(cfg, ds)
    feats: dict[str, SplitFeatures] = {}
    for split in (s for s in SPLITS if ds.splits.get(s)):
        if baseline == "mfcc":
            feats[split] = mfcc_split(ds.source(split), spec)
        else:
            feats[split] = embed_split(
                encoder,
                ds.source(split),
                spec,
                batch_size=int(cfg.probe.batch_size),
                desc=f"embed {split}",
                progress=progress,
            )
    result = probe_task(feats, "label", multi_label=ds.multi_label, config_probe=cfg.probe)
    failures = [(s, i, r) for s, f in feats.items() for i, r in f.failures]
    record: dict[str, Any] = {
        "workdir": str(Path(workdir).absolute()),
        "step": load_step(encoder, workdir, step),
        "dataset": dataset,
        "baseline": baseline,
        "model": {"name": cfg.model.name, "encoder": cfg.model.encoder, "width": cfg.model.width},
        "num_clips": {s: len(f.index) for s, f in feats.items()},
        "skipped": {s: f.num_failed for s, f in feats.items()},
        "num_skipped": len(failures),
        "skipped_clips": [
            {"split": s, "index": int(i), "reason": r} for s, i, r in failures[:MAX_LISTED_FAILURES]
        ],
        **result,
    }
    record["protocol"]["features"] = (
        "MFCC (20) + deltas, mean and std over the clip"
        if baseline == "mfcc"
        else f"{cfg.data.num_frames}-frame windows (hop = window) over the whole clip, tokens "
        "mean-pooled (stats_*: mean and std) per window, windows averaged per clip"
    )
    if any("av_label" in f.labels for f in feats.values()):
        record["av_label"] = probe_task(
            feats, "av_label", multi_label=False, config_probe=cfg.probe
        )
    if cfg.data.with_video and baseline != "mfcc":
        record["retrieval"] = retrieval(feats["test"])
        record["by_modality"] = _by_modality(result)

    out = Path(out or default_out(workdir, dataset, baseline))
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(record, indent=2) + "\n")
    report.plot_layer_scores(record, str(out / "layers.png"))
    print(report.format_table(table_rows(record, sibling_records(workdir, dataset, out))))
    if "retrieval" in record:
        print("retrieval: " + json.dumps(record["retrieval"]))
    print(f"wrote {out / 'probe.json'} and {out / 'layers.png'}")
    return record


def default_out(workdir, dataset: str, baseline: str | None) -> Path:
    """`WORKDIR/probe/<dataset>[-<baseline>]`: where a probe writes when given no `out`."""
    return Path(workdir) / "probe" / (dataset + (f"-{baseline}" if baseline else ""))


def sibling_records(workdir, dataset: str, out) -> list[dict]:
    """Earlier probe.json records of the same workdir and dataset in the default folders.

    `WORKDIR/probe/<dataset>` and `<dataset>-random` / `<dataset>-mfcc`, except `out`, in that
    order, so that the last of `jaxav probe` and its `--baseline` runs prints them side by side.
    """
    rows = []
    for baseline in (None, *BASELINES):
        folder = default_out(workdir, dataset, baseline)
        path = folder / "probe.json"
        if folder.resolve() == Path(out).resolve() or not path.exists():
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unreadable: not ours to fix here; the table just omits it
        if rec.get("dataset") == dataset and "layers" in rec:
            rows.append(rec)
    return rows


def table_rows(record: dict, others: list[dict] = ()) -> dict[str, dict]:
    """Table rows (`report.format_table`) of `record` and `others`: pretrained, random, mfcc.

    One row for `label` and one for `av_label` (when probed) per record.
    """
    order = (None, *BASELINES)  # pretrained, random, mfcc
    records = sorted((record, *others), key=lambda r: order.index(r.get("baseline")))
    rows: dict[str, dict] = {}
    for rec in records:
        name = rec.get("baseline") or f"step {rec.get('step')}"
        rows.setdefault(f"{name} (label)", rec)
        if "av_label" in rec:
            rows.setdefault(f"{name} (av_label)", rec["av_label"])
    return rows


def load_step(encoder: Encoder, workdir, step: int | None) -> int:
    """The checkpoint step probed (for a random baseline: the step its config came from)."""
    if encoder.step is not None:
        return int(encoder.step)
    from jaxav.train import checkpoint as ckpt

    return int(ckpt.saved_config(workdir, step)[1])
