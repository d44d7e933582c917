"""Training curves: `metrics.jsonl` (one JSON object per logged step) and TensorBoard events.

Only process 0 writes. On resume, rows past the restored step (logged by a run that was killed
before its next checkpoint) are dropped so the curve has one value per step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax

METRICS_FILE = "metrics.jsonl"


class MetricLog:
    """Appends metric rows for steps to `WORKDIR/metrics.jsonl` and `WORKDIR/tb/`."""

    def __init__(self, workdir, resume_step: int = 0):
        self.active = jax.process_index() == 0
        self.path = Path(workdir) / METRICS_FILE
        self._tb = None
        if not self.active:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and _step_of(line) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in keep))
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(workdir) / "tb"), purge_step=resume_step + 1)
        except ImportError:  # pragma: no cover - tensorboardX is a declared dependency
            self._tb = None

    def write(self, step: int, metrics: dict) -> None:
        """Writes one row: {'step': step, **metrics} (floats; NaN/inf written as strings)."""
        if not self.active:
            return
        row = {"step": int(step)}
        for k, v in metrics.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else str(v)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"train/{k}", float(v), int(step))

    def close(self) -> None:
        """Flushes TensorBoard events."""
        if self._tb is not None:
            self._tb.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1
