"""The training state pytree."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Everything a train step reads and writes.

    step: int32[] optimizer steps taken; params: the model's parameters (float32);
    opt_state: optax state; rng: the PRNG key the step splits for masks and dropout;
    nonfinite_total: int32[] updates skipped so far because the loss or gradients were NaN/inf;
    nonfinite_run: int32[] of those, how many in a row up to now (0 after a good step).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    nonfinite_total: jax.Array
    nonfinite_run: jax.Array
