"""Reporting probe results: the per-layer plot, the comparison table, masked reconstructions.

`plot_layer_scores` and `format_table` take the dicts of `probe.probe_all_layers` (also the
`probe.json` that `jaxav probe` writes); `reconstruct` runs a masked model's generative head for
the probing notebook's figures.
"""

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxav.models.registry import build_model


def _metric(result: Mapping[str, Any]) -> str:
    return result.get("protocol", {}).get("metric") or (
        "map" if any("map" in v for v in result.get("layers", {}).values()) else "accuracy"
    )


def plot_layer_scores(result: Mapping[str, Any], path: str) -> None:
    """Saves a PNG line plot of the test score (and kNN accuracy) per layer of `probe_all_layers`.

    Layers named `<prefix><number>` draw one line per prefix against the number; the fusions and
    un-numbered feature sets (e.g. `mfcc`) are horizontal dashed lines.

    Args:
      result: a `probe_all_layers` dict (scores in [0, 1]).
      path: where the PNG goes.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the backend alone

    metric = _metric(result)
    groups: dict[str, list[tuple[int, dict]]] = {}
    flat: dict[str, float] = {}
    for name, entry in result.get("layers", {}).items():
        m = re.match(r"^(.*?)(\d+)$", name)
        if m:
            groups.setdefault(m.group(1), []).append((int(m.group(2)), entry))
        else:
            flat[name] = entry[metric]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for prefix, pts in sorted(groups.items()):
        pts.sort(key=lambda p: p[0])
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1][metric] for p in pts], marker="o", label=f"{prefix}* linear")
        if all("knn_accuracy" in p[1] for p in pts):
            knn = [p[1]["knn_accuracy"] for p in pts]
            ax.plot(xs, knn, marker="x", linestyle=":", label=f"{prefix}* kNN")
    lines = {k: result[k][metric] for k in ("fusion", "learned_fusion") if k in result}
    for i, (key, value) in enumerate({**lines, **flat}.items()):
        ax.axhline(value, color=f"C{(5 + i) % 10}", linestyle="--", label=key)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def format_table(results_by_name: Mapping[str, Mapping[str, Any]]) -> str:
    """A text table comparing `probe_all_layers` results (e.g. pretrained, random init, mfcc).

    Args:
      results_by_name: row name -> a `probe_all_layers` dict.

    One row per result: best layer (by validation), its test and validation score, its kNN
    accuracy, and the test scores of the concatenation and learned fusions ("-" when absent),
    as percentages.

    Returns:
      the table, one line per row after a header and a separator.
    """

    def fmt(v: Any) -> str:
        return f"{100 * v:.1f}" if isinstance(v, float) else "-"

    rows = []
    metric = "accuracy"
    for name, res in results_by_name.items():
        metric = _metric(res)
        best = res.get("best", {})
        rows.append(
            [
                name,
                str(best.get("layer", "-")),
                fmt(best.get(metric)),
                fmt(best.get(f"val_{metric}")),
                fmt(best.get("knn_accuracy")),
                fmt(res.get("fusion", {}).get(metric)),
                fmt(res.get("learned_fusion", {}).get(metric)),
            ]
        )
    header = ["model", "best layer", f"test {metric} %", "val %", "kNN %", "concat %", "learned %"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
    )
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def reconstruct(params, config, audio: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Masked-spectrogram reconstruction by the model's generative head (SSAST or Audio-MAE).

    Args:
      params: the model's params (e.g. `Encoder.params`).
      config: the full config the model was trained with.
      audio: float32[B, T, F] normalised log-mel (T = config.data.num_frames).
      rng: a jax PRNG key for the mask (fixed key, same mask).

    Returns:
      (masked_input, reconstruction), each float32[B, T', F'] (T', F' cover whole patches):
      the input with masked patches set to NaN, and the input with every masked patch replaced by
      its prediction (mapped back from per-patch normalised targets with the input patch's
      mean and std when `model.norm_pix_loss`).
    """
    from jaxav.models.mae import gather_tokens
    from jaxav.models.patch import patchify

    model = build_model(config)

    def ssast_predict(m, x):  # SSAST.__call__ up to its generative head
        tokens, pos, grid = m.embed_patches(x)
        mask, _, masked_idx = m.sample_mask(tokens.shape[0], grid)
        tokens = jnp.where(mask[..., None], m.mask_embed.astype(tokens.dtype), tokens)
        enc, _, _ = m.run_encoder(tokens + pos.astype(tokens.dtype), train=False)
        gen = m.gen_head(gather_tokens(enc, masked_idx)).astype(jnp.float32)
        full = jnp.zeros(mask.shape + (gen.shape[-1],), jnp.float32)
        return full.at[jnp.arange(x.shape[0])[:, None], masked_idx].set(gen), mask

    def predict(m, x):
        return m.reconstruct(x, train=False) if hasattr(m, "reconstruct") else ssast_predict(m, x)

    audio = jnp.asarray(audio, jnp.float32)
    pred, mask = jax.device_get(
        jax.jit(lambda p, x, r: model.apply({"params": p}, x, method=predict, rngs={"mask": r}))(
            params, audio, rng
        )
    )
    size, stride = model.patch_size, model.patch_stride
    patches = np.asarray(jax.device_get(patchify(audio, size, stride)))  # [B, N, P]
    pred, mask = np.asarray(pred), np.asarray(mask)
    if model.norm_pix_loss:
        mean, std = patches.mean(-1, keepdims=True), np.sqrt(patches.var(-1, keepdims=True) + 1e-6)
        pred = pred * std + mean
    recon = np.where(mask[..., None], pred, patches)
    masked = np.where(mask[..., None], np.nan, patches)
    t, f = audio.shape[1], audio.shape[2]
    return _unpatchify(masked, t, f, size, stride), _unpatchify(recon, t, f, size, stride)


def _unpatchify(patches: np.ndarray, t: int, f: int, size, stride) -> np.ndarray:
    """float[B, N, p_f * p_t] freq-major patches -> float32[B, T', F'] (overlaps averaged)."""
    from jaxav.models.patch import grid_shape

    (p_f, p_t), (s_f, s_t) = size, stride
    n_f, n_t = grid_shape(t, f, size, stride)
    b = patches.shape[0]
    out = np.zeros((b, (n_f - 1) * s_f + p_f, (n_t - 1) * s_t + p_t), np.float64)  # [B, F, T]
    count = np.zeros(out.shape[1:])
    grid = patches.reshape(b, n_f, n_t, p_f, p_t)
    for i in range(n_f):
        for j in range(n_t):
            out[:, i * s_f : i * s_f + p_f, j * s_t : j * s_t + p_t] += grid[:, i, j]
            count[i * s_f : i * s_f + p_f, j * s_t : j * s_t + p_t] += 1
    return np.swapaxes(out / np.maximum(count, 1), 1, 2).astype(np.float32)
