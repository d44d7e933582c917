"""The device mesh and the one table mapping logical axis names to mesh axes.

Mesh axes are ("data", "fsdp", "model"). Parameters carry logical axis names
(`nn.with_logical_partitioning`); `LOGICAL_RULES` maps them to mesh axes, so sharding is declared
once, here. The batch is split over ("data", "fsdp"): contrastive losses computed inside `jit` on
the global batch see every example of every device as a negative.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxav.errors import ConfigError

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# logical axis name -> mesh axis (None: replicated). Every name a module uses must be listed.
LOGICAL_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("patch", None),
    ("state", None),
    ("conv", None),
    ("norm", None),
)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
    """Resolves (data, fsdp, model) sizes; one of them may be -1 (all devices left over)."""
    sizes = [int(mesh_config.data), int(mesh_config.fsdp), int(mesh_config.model)]
    if sizes.count(-1) > 1:
        raise ConfigError("at most one of mesh.data/fsdp/model may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(f"mesh: {num_devices} devices do not divide by {known}")
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ConfigError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} "
            f"devices, {num_devices} are available"
        )
    return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> Mesh:
    """A Mesh with axes ("data", "fsdp", "model") over `devices` (default: all)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(mesh_config, len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # odd topologies (e.g. a subset of devices): plain order
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ("data", "fsdp"), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated over the mesh."""
    return NamedSharding(mesh, P())


def logical_shardings(boxed_tree, mesh: Mesh):
    """NamedShardings for a tree whose leaves may be `nn.LogicallyPartitioned` boxes.

    Unannotated leaves are replicated. Dims that the mesh axis size does not divide are
    replicated instead of failing.
    """
    specs = nn.get_partition_spec(boxed_tree)
    shapes = jax.tree.map(lambda x: getattr(x, "shape", ()), nn.unbox(boxed_tree))

    def to_sharding(spec, shape):
        mesh_spec = nn.logical_to_mesh_axes(spec, LOGICAL_RULES) if spec else P()
        safe = []
        for dim, axes in zip(shape, tuple(mesh_spec) + (None,) * (len(shape) - len(mesh_spec))):
            names = (axes,) if isinstance(axes, str) else (axes or ())
            size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
            safe.append(axes if size > 1 and dim % size == 0 else None)
        return NamedSharding(mesh, P(*safe))

    return jax.tree.map(to_sharding, specs, shapes, is_leaf=lambda x: isinstance(x, P))
