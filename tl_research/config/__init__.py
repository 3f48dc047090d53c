"""Configs: the base run config, command-line overrides, sweep axes, run identity, file loading, validation.

A config file is a Python module with `get_config(arg=None) -> ConfigDict` (built from `base_config()`) and,
optionally, `get_sweep(arg=None) -> list[dict]`: one dict of {dotted key: value} per run, built with the axis
helpers (`axis`, `product`, `zip_axes`, `chain`). Both are called with the ARG of `--config FILE:ARG`, or with
no argument (tl_research/cli/command_line.py reads the command line). A config is read once, validated once and
passed down.

    defaults.py      base_config(): every key a run understands, with its default
    overrides.py     set_value, parse_value, apply_overrides (a run's config; derived keys filled in: data.targets,
                     source.seed = -1 as the run's seed), copy_config
    axes.py          axis, product, zip_axes, chain: a sweep's points
    run_identity.py  run_id, run_name; identity and config_hash, with INTRODUCED and NEUTRAL keys
    loading.py       load_module, read_config, sweep_points: a config file's configs and points
    validation.py    validate, validate_once, check_initial_weights: every check before any work

This package re-exports their public names (`from tl_research import config as config_lib` then
`config_lib.base_config()`); its modules import each other, never this package.
"""
import ml_collections  # noqa: F401 - also config.ml_collections

from tl_research.config.axes import Points, axis, chain, product, zip_axes
from tl_research.config.defaults import OPTIMIZERS, WANDB_MODES, base_config
from tl_research.config.loading import load_module, read_config, sweep_points
from tl_research.config.overrides import (RUN_SEED, apply_overrides, copy_config, expand_extra_test_sets,
                                          from_record, parse_value, resolve_source_seed, resolve_task_targets,
                                          set_value)
from tl_research.config.run_identity import INTRODUCED, NEUTRAL, config_hash, identity, run_id, run_name
from tl_research.config.validation import check_initial_weights, validate, validate_once
from tl_research.finetune.freezing import resolve_frozen_depth  # noqa: F401 - also config.resolve_frozen_depth

__all__ = ["INTRODUCED", "NEUTRAL", "OPTIMIZERS", "Points", "RUN_SEED", "WANDB_MODES", "apply_overrides", "axis",
           "base_config", "chain", "check_initial_weights", "config_hash", "copy_config", "expand_extra_test_sets",
           "from_record", "identity", "load_module", "parse_value", "product", "read_config", "resolve_frozen_depth",
           "resolve_source_seed", "resolve_task_targets", "run_id", "run_name", "set_value", "sweep_points",
           "validate", "validate_once", "zip_axes"]
