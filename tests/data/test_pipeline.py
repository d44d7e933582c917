"""The grain pipeline: crops, determinism, exact resumption, process sharding, global batches."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxav.data import frontend, pipeline
from jaxav.train import sharding as shd

SR = 16000


def _clip(n, seed, label=0, video=True):
    rng = np.random.default_rng(seed)
    ex = {
        "audio": (rng.standard_normal(n) * 3000).astype(np.int16),
        "label": np.int64(label),
        "labels": np.eye(3, dtype=np.uint8)[label],
        "id": f"clip{seed}".encode(),
    }
    if video:
        ex["video"] = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
        ex["has_video"] = np.bool_(True)
    return ex


@pytest.fixture(scope="module")
def source():
    # 23 clips of varying length: shorter and longer than the 64-frame window.
    return [_clip(4000 + 900 * i, i, label=i % 3) for i in range(23)]


@pytest.fixture(scope="module")
def spec():
    return pipeline.ExampleSpec(
        num_frames=64,
        num_mel_bins=32,
        mean=-4.0,
        std=3.0,
        with_video=True,
        video_frames=4,
        video_size=8,
        num_classes=3,
    )


def test_spec_samples_give_exact_frames(spec):
    assert frontend.num_frames(spec.num_samples, SR) == spec.num_frames


def test_crop_or_pad():
    w = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(pipeline.crop_or_pad(w, 4, None), [3, 4, 5, 6])
    np.testing.assert_array_equal(pipeline.crop_or_pad(w, 4, 6), [6, 7, 8, 9])
    np.testing.assert_array_equal(pipeline.crop_or_pad(w[:2], 4, None), [0, 1, 0, 0])


def test_pick_frames_resizes_and_normalises():
    v = np.full((8, 16, 16, 3), 255, np.uint8)
    out = pipeline.pick_frames(v, 4, 8, None)
    assert out.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(out, (1.0 - pipeline.VIDEO_MEAN) / pipeline.VIDEO_STD)


def test_transform_outputs(source, spec):
    out = pipeline.ExampleTransform(spec, train=False)(source[0])
    assert out["audio"].shape == (64, 32) and out["audio"].dtype == np.float32
    assert np.isfinite(out["audio"]).all()
    assert out["video"].shape == (4, 8, 8, 3) and bool(out["has_video"])
    assert out["labels"].shape == (3,) and int(out["label"]) == 0
    # normalisation uses the dataset statistics, not constants
    wave = pipeline.crop_or_pad(
        source[0]["audio"].astype(np.float32) / 32768, spec.num_samples, None
    )
    np.testing.assert_allclose(
        out["audio"], (frontend.fbank_numpy(wave, SR, 32) + 4.0) / 6.0, rtol=1e-5, atol=1e-5
    )


def test_missing_video_is_flagged(spec):
    ex = _clip(9000, 1, video=False)
    out = pipeline.ExampleTransform(spec, train=True)(ex, np.random.default_rng(0))
    assert not bool(out["has_video"]) and not out["video"].any()


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_same_seed_same_batches_and_exact_resume(source, spec):
    make = lambda: pipeline.make_train_dataset(source, spec, batch_size=4, seed=3)
    a = _take(iter(make()), 9)  # > 1 epoch (23 clips / 4)
    b = _take(iter(make()), 9)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["audio"], y["audio"])
    c = _take(iter(pipeline.make_train_dataset(source, spec, batch_size=4, seed=4)), 1)
    assert not np.array_equal(a[0]["audio"], c[0]["audio"])
    # save the iterator state after 5 batches; a fresh iterator set to it yields batches 6..9
    it = iter(make())
    _take(it, 5)
    state = it.get_state()
    it2 = iter(make())
    it2.set_state(state)
    for x, y in zip(_take(it2, 4), a[5:]):
        np.testing.assert_array_equal(x["audio"], y["audio"])
        np.testing.assert_array_equal(x["label"], y["label"])


def test_processes_read_disjoint_shares_covering_the_epoch(source, spec):
    seen = []
    for p in range(2):
        ds = pipeline.make_eval_dataset(
            source, spec, batch_size=5, process_index=p, process_count=2
        )
        for batch in ds:
            seen.extend(batch["index"][batch["valid"]].tolist())
    assert sorted(seen) == list(range(len(source)))


def test_eval_pads_last_batch(source, spec):
    batches = list(pipeline.make_eval_dataset(source, spec, batch_size=10))
    assert [b["audio"].shape[0] for b in batches] == [10, 10, 10]
    assert int(sum(b["valid"].sum() for b in batches)) == 23
    assert not batches[-1]["valid"][3:].any()


def test_global_batch_is_sharded_over_8_devices(source, spec):
    devices = jax.devices()
    assert len(devices) == 8
    mesh = Mesh(np.asarray(devices).reshape(4, 2, 1), shd.MESH_AXES)
    local = next(iter(pipeline.make_train_dataset(source, spec, batch_size=8, seed=0)))
    batch = pipeline.global_batch(local, shd.batch_sharding(mesh))
    assert batch["audio"].shape == (8, 64, 32)
    assert len(batch["audio"].sharding.device_set) == 8
    shard_rows = {s.data.shape[0] for s in batch["audio"].addressable_shards}
    assert shard_rows == {1}
    np.testing.assert_array_equal(np.asarray(batch["audio"]), local["audio"])
