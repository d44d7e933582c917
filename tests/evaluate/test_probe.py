"""Linear probe, kNN, layer fusion and the per-layer report on generated features."""

import json

import numpy as np
import pytest

from jaxav.evaluate import probe, report

GRID = (1e-4, 1e-2, 1.0)


def _planted(rng, n: int, d: int, c: int, scale: float = 4.0):
    """Features float32[n, d] and labels int[n] from a planted linear rule with Gumbel noise."""
    w = rng.normal(size=(d, c))
    x = rng.normal(size=(n, d)).astype(np.float32) * 3.0 + 1.0  # off-centre: needs standardize
    y = np.argmax(scale * (x - 1.0) @ w / (3.0 * np.sqrt(d)) + rng.gumbel(size=(n, c)), -1)
    return x, y


def _fit(x_tr, y_tr, x_val, y_val, **kw):
    kw.setdefault("multi_label", False)
    return probe.train_linear_probe(x_tr, y_tr, x_val, y_val, l2_grid=GRID, steps=200, **kw)


def test_standardize_uses_train_statistics():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, (100, 4)), rng.normal(3.0, 2.0, (50, 4))
    a_s, b_s = probe.standardize(a, b)
    np.testing.assert_allclose(a_s.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(a_s.std(0), 1, atol=1e-5)
    np.testing.assert_allclose(b_s, (b - a.mean(0)) / a.std(0), atol=1e-4)


def test_probe_recovers_planted_signal_and_not_shuffled_labels():
    rng = np.random.default_rng(0)
    x, y = _planted(rng, 600, 16, 4, scale=30.0)
    res = _fit(x[:300], y[:300], x[300:400], y[300:400])
    assert res.metric == "accuracy" and res.weights.shape == (16, 4)
    assert res.val_score == max(res.val_scores)
    assert probe.evaluate_linear_probe(res, x[400:], y[400:]) > 0.85
    shuffled = _fit(x[:300], rng.permutation(y[:300]), x[300:400], y[300:400])
    assert probe.evaluate_linear_probe(shuffled, x[400:], y[400:]) < 0.4  # chance = 0.25


def test_multi_label_probe_map():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 24)).astype(np.float32)
    w = rng.normal(size=(24, 5))
    y = ((x @ w / np.sqrt(24) + 0.3 * rng.normal(size=(600, 5))) > 0.8).astype(np.uint8)
    res = _fit(x[:300], y[:300], x[300:400], y[300:400], multi_label=True)
    assert res.metric == "map"
    assert probe.evaluate_linear_probe(res, x[400:], y[400:]) > 0.9
    base_rate = y[400:].mean()  # mAP of a random ranking
    shuffled = _fit(x[:300], y[rng.permutation(300)], x[300:400], y[300:400], multi_label=True)
    assert probe.evaluate_linear_probe(shuffled, x[400:], y[400:]) < base_rate + 0.15


def _gaussians(rng, n: int, d: int, mu: float, flip: float):
    """Two classes at +-mu along a random direction, isotropic noise, `flip` of labels flipped."""
    y = np.arange(n) % 2
    u = rng.normal(size=d)
    x = (mu * (2 * y - 1)[:, None] * u / np.linalg.norm(u) + rng.normal(size=(n, d))).astype(
        np.float32
    )
    flipped = rng.permutation(n)[: int(flip * n)]
    noisy = y.copy()
    noisy[flipped] = 1 - y[flipped]
    return x, y, noisy


def test_l2_selection_regularises_noisy_high_dimensional_problem_more():
    wins = 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        # 40 training examples in 300 dims with 20% flipped labels vs 40 clean ones in 5 dims.
        x, y, noisy = _gaussians(rng, 1040, 300, 2.5, 0.2)
        hard = _fit(x[:40], noisy[:40], x[40:], y[40:])
        x, y, _ = _gaussians(rng, 1040, 5, 4.0, 0.0)
        easy = _fit(x[:40], y[:40], x[40:], y[40:])
        for res in (hard, easy):  # always the val-best (ties: lowest val loss)
            best = [i for i, s in enumerate(res.val_scores) if s == max(res.val_scores)]
            assert res.l2 == min((res.val_losses[i], res.l2_grid[i]) for i in best)[1]
        wins += hard.l2 > easy.l2
    assert wins >= 2


def test_adam_minibatch_path():
    rng = np.random.default_rng(2)
    x, y = _planted(rng, 500, 16, 3, scale=12.0)
    res = _fit(x[:300], y[:300], x[300:400], y[300:400], batch_size=64, lr=0.05)
    assert probe.evaluate_linear_probe(res, x[400:], y[400:]) > 0.8


def test_split_validation_is_stratified():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    x = {"a": np.arange(100)[:, None].astype(np.float32), "b": np.zeros((100, 3, 2))}
    x_tr, y_tr, x_val, y_val = probe.split_validation(x, y, fraction=0.2, seed=0)
    assert np.bincount(y_val).tolist() == [10, 6, 4]
    assert len(y_tr) == 80 and x_val["b"].shape == (20, 3, 2)
    ids = np.concatenate([x_tr["a"][:, 0], x_val["a"][:, 0]])
    assert sorted(ids.tolist()) == list(range(100))
    np.testing.assert_array_equal(y[x_val["a"][:, 0].astype(int)], y_val)


def test_knn_on_separable_clusters():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(5, 8)) * 4
    y_tr, y_te = np.arange(100) % 5, np.arange(40) % 5
    x_tr = centers[y_tr] + rng.normal(size=(100, 8))
    x_te = centers[y_te] + rng.normal(size=(40, 8))
    assert probe.knn_accuracy(x_tr, y_tr, x_te, y_te, k=10) == 1.0


def test_fuse_layers_concatenates():
    feats = {"layer_1": np.zeros((7, 3)), "layer_2": np.ones((7, 5))}
    fused = probe.fuse_layers(feats, ["layer_2", "layer_1"])
    assert fused.shape == (7, 8) and fused[:, :5].min() == 1 and fused[:, 5:].max() == 0


def _layered_features(rng, n_layers: int = 10, d: int = 8):
    """Features per split where layer_3 holds a planted signal, the others weaker or noise."""
    n = {"train": 200, "val": 80, "test": 80}
    x, y = _planted(rng, sum(n.values()), d, 3, scale=12.0)
    feats = {}
    for i in range(1, n_layers + 1):
        weight = {3: 1.0, 4: 0.5}.get(i, 0.0)
        feats[f"layer_{i}"] = weight * x + rng.normal(size=x.shape) * (1.0 - 0.5 * weight)
    feats["cls_1"] = rng.normal(size=(x.shape[0], 5, d))  # token features: mean-pooled
    bounds = np.cumsum([0, n["train"], n["val"], n["test"]])
    splits = [
        {k: v[a:b] for k, v in feats.items()} for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    labels = [y[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return splits, labels


@pytest.fixture(scope="module")
def layer_result():
    (tr, va, te), (y_tr, y_va, y_te) = _layered_features(np.random.default_rng(4))
    config = {"l2_grid": GRID, "steps": 200, "knn_k": 5, "batch_size": 64}
    return probe.probe_all_layers(
        tr, va, te, y_tr, y_va, y_te, multi_label=False, config_probe=config
    )


def test_probe_all_layers_report(layer_result, tmp_path):
    res = json.loads(json.dumps(layer_result))  # JSON-serialisable
    names = list(res["layers"])
    assert names == ["cls_1"] + [f"layer_{i}" for i in range(1, 11)]
    vals = {n: e["val_accuracy"] for n, e in res["layers"].items()}
    assert res["best"]["layer"] == max(vals, key=vals.get) == "layer_3"
    assert res["best"]["accuracy"] == res["layers"]["layer_3"]["accuracy"] > 0.8
    assert 0 <= res["best"]["knn_accuracy"] <= 1
    assert res["layers"]["layer_7"]["accuracy"] < 0.6  # noise layer near chance (1/3)
    assert res["fusion"]["layers"] == [f"layer_{i}" for i in range(1, 11)]
    assert res["fusion"]["accuracy"] > 0.6
    weights = res["learned_fusion"]["layer_weights"]
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert max(weights, key=weights.get) in ("layer_3", "layer_4")
    assert res["protocol"]["num_train"] == 200 and res["protocol"]["l2_grid"] == list(GRID)

    path = tmp_path / "layers.png"
    report.plot_layer_scores(res, str(path))
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"

    table = report.format_table({"pretrained": res, "random init": res})
    lines = table.splitlines()
    assert len(lines) == 4 and "random init" in lines[3] and "layer_3" in lines[2]
    assert f"{100 * res['best']['accuracy']:.1f}" in lines[2]


def test_probe_all_layers_multi_label_with_config_group():
    from jaxav.config_defaults import base_config

    config = base_config().probe
    config.l2_grid, config.steps = GRID, 100
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = (x[:, :3] > 0.5).astype(np.uint8)  # three classes read off three features
    feats = {"layer_1": x, "layer_2": rng.normal(size=x.shape), "layer_10": 0.5 * x}
    split = lambda a, b: {k: v[a:b] for k, v in feats.items()}
    res = probe.probe_all_layers(
        split(0, 200), split(200, 250), split(250, 300), y[:200], y[200:250], y[250:],
        multi_label=True, config_probe=config,
    )  # fmt: skip
    json.dumps(res)
    assert list(res["layers"]) == ["layer_1", "layer_2", "layer_10"]
    assert "knn_accuracy" not in res["layers"]["layer_1"]
    assert res["layers"]["layer_1"]["map"] > 0.9 > res["layers"]["layer_2"]["map"]
    assert res["best"]["layer"] in ("layer_1", "layer_10") and res["protocol"]["metric"] == "map"
    assert "map" in report.format_table({"multi": res}).splitlines()[0]
