"""Starting a run from weights that a strategy extended (an adapter or VPT run's exported weights, `init=<run dir>`
or its sweep's source): the tensors the plain model lacks are the ones that run's strategy added, and they load
into this run's added parameters when its strategy adds the same ones (same paths, same shapes); anything else is
one clear error, raised while the config is checked (config.check_initial_weights, before any run of a sweep
trains) and again at setup.

    split   (the weights the plain model takes, the added tensors): the checkpoint's tensors under `units.` that
            the plain model of config.model does not have
    load    the added tensors written into the extended model; CheckpointMismatch in one line naming them when
            the run's strategy adds others or none
"""
from __future__ import annotations

import functools
import json

import ml_collections
from flax import nnx

from tl_research import models
from tl_research.checkpoints import weights as weights_lib

Weights = weights_lib.Weights


@functools.lru_cache(maxsize=16)
def _plain_paths(model_json: str) -> dict[str, frozenset[str]]:
    """collection -> the dotted paths under `units.` of the plain model of a config.model (shapes only)."""
    model = models.abstract(ml_collections.ConfigDict(json.loads(model_json)), 2, 3)
    return {coll: frozenset(k for k in (".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, t)))
                            if k.startswith("units."))
            for coll, t in weights_lib.COLLECTIONS.items()}


def split(weights: Weights | None, model_cfg) -> tuple[Weights | None, Weights]:
    """(weights without the added tensors, the added tensors). Nothing is split off from weights that lack one
    of the plain model's unit tensors (another architecture: the transfer names what is missing and what is
    unexpected, as for any checkpoint)."""
    if weights is None:
        return None, {}
    plain = _plain_paths(model_cfg.to_json())
    if any(not plain[c] <= set(weights.get(c, {})) for c in plain):
        return weights, {}
    base, added = {}, {}
    for coll, table in weights.items():
        extra = {k: v for k, v in table.items() if k.startswith("units.") and k not in plain.get(coll, ())}
        base[coll] = {k: v for k, v in table.items() if k not in extra}
        if extra:
            added[coll] = extra
    return base, added


def _listed(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:2]) + (", ..." if len(keys) > 2 else "")


def load(model, added: Weights, config) -> str:
    """Writes the `added` tensors (split's) into `model`, already extended by config's strategy; the transfer
    report's part ('' when there are none). CheckpointMismatch (one line) unless the strategy added exactly
    those tensors, with the same shapes."""
    if not any(added.values()):
        return ""
    state = weights_lib.flat_state(model)
    plain = _plain_paths(config.model.to_json())
    own = {c: {k: v.shape for k, v in state[c].items() if k.startswith("units.") and k not in plain[c]}
           for c in state}
    theirs = {c: {k: tuple(v.shape) for k, v in added.get(c, {}).items()} for c in state}
    if own != theirs:
        held = [k for c in theirs for k in theirs[c]]
        adds = [k for c in own for k in own[c]]
        name = config.strategy.name
        theirs_text = f"the {len(held)} tensors the checkpoint's strategy added ({_listed(held)})"
        mine = f"other tensors ({_listed(adds)}) than {theirs_text}" if adds else f"none of {theirs_text}"
        raise weights_lib.CheckpointMismatch(
            f"strategy.name={name} adds {mine}: start from it with the strategy and settings of the run that "
            "saved it (the same added paths and shapes)")
    weights_lib.assign(model, added)
    return f"; {sum(len(t) for t in added.values())} added tensors loaded ({config.strategy.name})"
