"""A run's identity: its id and name from its swept values (`run_id`, `run_name`), and what makes two configs
the same experiment (`identity`, `config_hash`), with the keys added since workdirs were made (INTRODUCED)
and the keys that never change what a run computes (NEUTRAL)."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", text).strip("_") or "_"


# Keys whose values are free text the slug would blur (regexes: `.*` and `.+` both slug to `._`): their slug
# ends in a digest of the exact value, so two different values never share a run id (sweep_points keeps one
# run per id). Only keys added with this rule, so no existing run id changes.
DIGEST_KEYS: frozenset[str] = frozenset({"strategy.trainable", "strategy.lora.targets"})


def _slug_of(key: str, value: Any) -> str:
    if key not in DIGEST_KEYS:
        return _slug(value)
    digest = hashlib.sha1(json.dumps(value, default=str).encode()).hexdigest()[:8]
    return f"{_slug(value)}-{digest}"


def run_id(point: dict[str, Any]) -> str:
    """A stable, readable id from a run's swept values (order-independent); 'run' for a single run."""
    if not point:
        return "run"
    text = "__".join(f"{k}-{_slug_of(k, v)}" for k, v in sorted(point.items()))
    if len(text) > 150:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        text = text[:130] + "__" + digest
    return text


def run_name(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(point.items())) or "run"


# Keys added to base_config() after workdirs were made without them: each with the value that trains what the
# code trained before the key existed. A config holding that value keeps the identity it had before the key
# existed (its config_hash, so a source model is not retrained; the workdir checks, so a workdir is not
# refused), so relaunching an existing sweep after an upgrade resumes it. A key set to any other value is a
# different config, as usual. Every key added to base_config() goes here or into NEUTRAL (tests/test_config_keys.py
# fails otherwise; tests/config_keys.txt lists the keys existing workdirs hold).
INTRODUCED: dict[str, Any] = {"model.stem_stride": 1, "train.background_weight": 1.0,
                              "train.feature_cache": True,  # cached activations: the same results
                              "train.deterministic": False,
                              "model.drop_path": 0.0,  # no stochastic depth: the blocks as before
                              # what the strategy's phases train, unrestricted
                              "strategy.trainable_units": (), "strategy.trainable": (),
                              # no weight EMA (its other keys then change nothing), no SAM
                              "train.ema_decay": 0.0, "train.ema_warmup": False, "train.ema_select": "raw",
                              "optimizer.sam_rho": 0.0, "optimizer.sam_adaptive": False,
                              # read by strategy.name=lora only; merge: nothing else adds parameters to fold
                              "strategy.lora.rank": 8, "strategy.lora.alpha": 8.0, "strategy.lora.convs": False,
                              "strategy.lora.targets": ".*", "strategy.merge": True,
                              # the blocks of the adapter and vpt_* strategies (read by those alone)
                              "strategy.adapter.dim": 8, "strategy.adapter.placement": "houlsby",
                              "strategy.adapter.scale": 0.0, "strategy.vpt.prompts": 10, "strategy.vpt.dropout": 0.0,
                              # the transfer regularisers' settings: read only under their strategy.regularizer
                              "strategy.delta_alpha": 0.48, "strategy.delta_beta": 0.01,
                              "strategy.delta_units": (), "strategy.delta_attention": True,
                              "strategy.delta_attention_examples": 320, "strategy.bss_eta": 0.001,
                              "strategy.bss_k": 1, "strategy.stochnorm_p": 0.5, "strategy.co_tuning_lambda": 2.3,
                              "transfer_depth": -1,  # every unit of the initial weights loaded
                              # the class weights' beta and normalisation as they were fixed before
                              "train.class_weights_beta": 0.999, "train.class_weights_norm": "classes",
                              # co_tuning's relationship before the calibrated one was built: TLlib's average
                              "strategy.co_tuning_relationship": "direct", "strategy.co_tuning_source_scale": 1.0}


# Keys that never change what a run computes (how often it checkpoints, how much disk the feature cache may
# take: a run it sends to the images computes what the cached path would, up to float reassociation, and the
# automatic cap depends on the free space anyway): left out of a config's identity at every value, so
# setting one neither retrains a source model nor refuses a workdir.
NEUTRAL: frozenset[str] = frozenset({"train.checkpoint_seconds", "train.feature_cache_max_gb",
                                     "data.workers",  # worker processes: the same batches, whatever their count
                                     "imports",  # where extension code is found; the names it registers count
                                     # how the results are analysed after the runs, never what a run trains
                                     "report.transferability", "report.transferability_examples",
                                     "report.similarity_features"})


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def _introduced(path: str, value) -> bool:
    while path.startswith("source."):  # a run's config holds its source model's config under source.
        path = path[len("source."):]
    return path in NEUTRAL or (path in INTRODUCED and _plain(value) == _plain(INTRODUCED[path]))


# Keys read only when a sibling key has a value (key -> (sibling, value)): left out of the identity otherwise,
# whatever their value, so a default that differs from the INTRODUCED one changes no other config's identity.
READ_ONLY_UNDER: dict[str, tuple[str, Any]] = {
    "strategy.co_tuning_relationship": ("regularizer", "co_tuning"),
    "strategy.co_tuning_source_scale": ("regularizer", "co_tuning"),
}


def _unread(path: str, tree: dict) -> bool:
    while path.startswith("source."):
        path = path[len("source."):]
    sibling, value = READ_ONLY_UNDER.get(path, (None, None))
    return sibling is not None and tree.get(sibling) != value


def identity(tree: dict, prefix: str = "") -> dict:
    """A config as a nested dict (ConfigDict.to_dict() or its JSON) without the INTRODUCED keys that hold
    their old-behaviour value, nor the READ_ONLY_UNDER keys their condition leaves unread: what decides whether
    two configs are the same experiment."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if _unread(path, tree):
            continue
        if isinstance(value, dict):
            inner = identity(value, path + ".")
            if inner or not value:  # a block all of whose keys are introduced at their old value was not there
                out[key] = inner
        elif not _introduced(path, value):
            out[key] = value
    return out


def config_hash(config) -> str:
    tree = identity(config.to_dict())
    return hashlib.sha1(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:12]
