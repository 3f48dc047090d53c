"""Where arrays live: the device mesh of `config.mesh` and the parameter shardings of `config.sharding`.

No sharding code lives inside a model (big_vision's `sharding.py` is the model): a run's parameters are
placed by an ordered list of rules over their dotted names,

    config.mesh     = (("data", -1),)                       # every device on the data axis (the default)
                      (("data", 2), ("fsdp", 4))            # 2-way data x 4-way FSDP on 8 devices
    config.sharding = ((".*", "fsdp"),)                     # (regex over parameter names, rule), first match wins

with the rules `replicate` (a full copy on every device) and `fsdp` (the tensor's largest dimension that the
`fsdp` axis size divides is split over that axis, as in ZeRO-3 / FSDP, Rajbhandari et al. 2020, arXiv
1910.02054; tensors under MIN_FSDP_SIZE elements and tensors with no such dimension stay replicated). A
parameter no rule covers is an error naming it. Batches are split over the `data` and `fsdp` axes together
(every device of the mesh sees different examples); the optimizer state of a parameter is placed like the
parameter; BatchNorm statistics, the step and the RNG key are replicated.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from tl_research.core.errors import ConfigError

AXES = ("data", "fsdp")  # the mesh axes a run knows; both split the batch, fsdp also splits parameters
RULES = ("replicate", "fsdp")
MIN_FSDP_SIZE = 2**10  # elements: smaller tensors cost more to gather than they save (biases, norms)
DEFAULT_MESH = (("data", -1),)
DEFAULT_RULES = ((".*", "replicate"),)


# ---------------------------------------------------------------------------------------------- config

def mesh_shape(mesh_cfg: Sequence, num_devices: int) -> dict[str, int]:
    """`config.mesh` -> {axis: size} over `num_devices` (one size may be -1: the devices left); ConfigError
    naming config.mesh for an unknown or repeated axis, a bad size, or sizes whose product is not the count."""
    allowed = f"((axis, size), ...) with axes from {', '.join(AXES)}, sizes > 0 or one -1, product = " \
              f"{num_devices} devices; e.g. (('data', -1),) or (('data', 2), ('fsdp', {max(1, num_devices // 2)}))"
    try:
        pairs = [(str(a), int(s)) for a, s in mesh_cfg]
    except (TypeError, ValueError):
        raise ConfigError("mesh", mesh_cfg, allowed) from None
    names = [a for a, _ in pairs]
    if not pairs or len(set(names)) != len(names) or any(a not in AXES for a in names):
        raise ConfigError("mesh", mesh_cfg, allowed)
    sizes = [s for _, s in pairs]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ConfigError("mesh", mesh_cfg, allowed)
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError("mesh", mesh_cfg, allowed, why=f"{known} does not divide {num_devices} devices")
        sizes = [num_devices // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != num_devices:
        raise ConfigError("mesh", mesh_cfg, allowed, why=f"{math.prod(sizes)} devices named, {num_devices} here")
    return dict(zip(names, sizes))


def check_rules(rules: Sequence) -> list[tuple[re.Pattern, str]]:
    """`config.sharding` -> [(compiled regex, rule)]; ConfigError naming config.sharding otherwise."""
    allowed = f"((regex, rule), ...) with rules {', '.join(RULES)}, e.g. (('.*', 'fsdp'),)"
    out = []
    try:
        pairs = [(p, r) for p, r in rules]
    except (TypeError, ValueError):
        raise ConfigError("sharding", rules, allowed) from None
    for pattern, rule in pairs:
        if rule not in RULES:
            raise ConfigError("sharding", rules, allowed, why=f"unknown rule {rule!r}")
        try:
            out.append((re.compile(pattern), rule))
        except (re.error, TypeError) as e:
            raise ConfigError("sharding", rules, allowed, why=f"bad regex {pattern!r}: {e}") from None
    return out


def batch_devices(mesh_cfg: Sequence, num_devices: int) -> int:
    """How many ways a batch is split: the product of the data and fsdp axes (all of the mesh today)."""
    shape = mesh_shape(mesh_cfg, num_devices)
    return math.prod(shape.get(a, 1) for a in AXES)


def check_batch(key: str, batch_size: int, divisor: int, what: str) -> None:
    """ConfigError naming `key` unless `batch_size` is a positive multiple of `divisor`, with the nearest
    valid sizes."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0 or batch_size % divisor:
        below = (batch_size // divisor) * divisor if isinstance(batch_size, int) and batch_size > 0 else 0
        near = " and ".join(str(n) for n in (below, below + divisor) if n > 0)
        raise ConfigError(key, batch_size, f"a positive multiple of {divisor} ({what}); the nearest: {near}")


# ---------------------------------------------------------------------------------------------- placement

def make_mesh(mesh_cfg: Sequence = DEFAULT_MESH, devices=None) -> jax.sharding.Mesh:
    """The Mesh of `config.mesh` over all devices (of every process)."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_cfg, len(devices))
    # Auto axes: shardings follow the jit in/out specs and XLA propagates the rest (the default axis type
    # of make_mesh is Explicit in current JAX, under which per-example ops such as vmapped augmentation fail)
    return jax.make_mesh(tuple(shape.values()), tuple(shape), axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
                         devices=devices)


def batch_axes(mesh: jax.sharding.Mesh) -> tuple[str, ...]:
    return tuple(a for a in mesh.axis_names if a in AXES)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data and fsdp axes together."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_spec(shape: Sequence[int], axis_size: int) -> P:
    """The largest dimension `axis_size` divides, split over 'fsdp' (ties: the last such dimension, as
    big_vision); P() for small tensors or when no dimension divides."""
    if axis_size <= 1 or math.prod(shape) < MIN_FSDP_SIZE:
        return P()
    order = sorted(range(len(shape)), key=lambda i: (shape[i], i), reverse=True)
    for i in order:
        if shape[i] % axis_size == 0:
            return P(*([None] * i + ["fsdp"]))
    return P()


def param_shardings(shapes: dict[str, Sequence[int]], rules: Sequence, mesh: jax.sharding.Mesh) -> dict:
    """name -> NamedSharding for every parameter, by the first rule whose regex matches its dotted name
    (re.search); ConfigError naming config.sharding and the first parameter no rule covers."""
    compiled = check_rules(rules)
    fsdp = dict(zip(mesh.axis_names, mesh.devices.shape)).get("fsdp", 1)
    out = {}
    for name, shape in shapes.items():
        rule = next((r for pattern, r in compiled if pattern.search(name)), None)
        if rule is None:
            raise ConfigError("sharding", rules, "rules that cover every parameter, e.g. a last ('.*', 'replicate')",
                              why=f"no rule covers parameter {name}")
        out[name] = NamedSharding(mesh, fsdp_spec(tuple(shape), fsdp) if rule == "fsdp" else P())
    return out


def like_params(tree: Any, params: dict, shardings: dict, mesh: jax.sharding.Mesh) -> Any:
    """Shardings for a pytree that holds per-parameter arrays (an optimizer state): a leaf under the key of a
    parameter with that parameter's shape takes its sharding, any other leaf (counts, hyperparameters) is
    replicated."""
    repl = replicated(mesh)

    def pick(path, leaf):
        for k in reversed(path):
            name = getattr(k, "key", None)
            if name in shardings and tuple(np.shape(leaf)) == tuple(np.shape(params[name])):
                return shardings[name]
        return repl
    return jax.tree_util.tree_map_with_path(pick, tree)


def place(tree: Any, shardings: Any) -> Any:
    """Host arrays (the same on every process) -> global arrays with the given shardings (a tree of them, or a
    prefix of `tree`: a sharding stands for every array under it). Each device receives only its own shard,
    and no device ever holds a full copy of a sharded tensor."""
    def put(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(lambda sharding, sub: jax.tree.map(lambda x: put(x, sharding), sub), shardings, tree)


def to_host(tree: Any) -> Any:
    """Device arrays -> numpy on every process: replicated arrays are read from a local copy (multi-host:
    the other processes' devices cannot be read); sharded ones are gathered."""
    from jax.experimental import multihost_utils

    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.tree.map(get, tree)


def per_device_bytes(tree: Any) -> int:
    """The most bytes of `tree` any one device holds (from the arrays' addressable shards)."""
    per: dict = {}
    for x in jax.tree.leaves(tree):
        for shard in x.addressable_shards:
            per[shard.device] = per.get(shard.device, 0) + shard.data.nbytes
    return max(per.values()) if per else 0


PRECISIONS = ("float32", "bfloat16")


def check(config, num_devices: int | None = None) -> None:
    """config.mesh, config.sharding, config.precision, train.accumulate and the batch sizes against the
    devices of this run (all processes'), before any work: ConfigError naming the key otherwise."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    split = batch_devices(config.mesh, num_devices)
    check_rules(config.sharding)
    if config.precision not in PRECISIONS:
        raise ConfigError("precision", config.precision, ", ".join(PRECISIONS))
    k = config.train.accumulate
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError("train.accumulate", k, "a whole number >= 1 of micro-batches per step (1 = off)")
    what = f"{split} data-parallel devices" + (f" x train.accumulate={k} micro-batches" if k > 1 else "")
    check_batch("data.batch_size", config.data.batch_size, split * k, what)
    ebs = config.data.eval_batch_size
    if isinstance(ebs, bool) or not isinstance(ebs, int) or ebs <= 0:
        raise ConfigError("data.eval_batch_size", ebs, "a positive number (any: batches are padded to the devices)")


def padded(batch_size: int, divisor: int) -> int:
    """`batch_size` rounded up to a multiple of `divisor` (evaluation pads and masks the extra rows)."""
    return -(-batch_size // divisor) * divisor
