"""LoRA and SSF (strategy.name=lora | ssf): the trainable counts their formulas give, a model they extend computing
what the plain one did until their parameters move, the merge that folds them into the plain architecture's
weights (merge-then-predict equals predict), and runs of each: only their parameters and the head train, the loss
falls, a run killed halfway resumes to the same end, and its exported (merged) weights start any later run.

Pure functions on a ViT (vit_micro at 8x8, cut to its patch embedding, one encoder block and its final norm: every
kind of layer it has) and the tiny ResNet; the runs use the tiny ResNet (LoRA with convs=True: its one 1x1
convolution, the stage transition's projection)."""
import functools
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from conftest import tiny
from tl_research import config as C
from tl_research import models
from tl_research.checkpoints import weights as weights_lib
from tl_research.core.errors import ConfigError
from tl_research.finetune import freezing, strategies
from tl_research.models import peft
from tl_research.run import setup, trainer
from tl_research.run.steps import StepCache

RANK, ALPHA = 2, 3.0
WIDTH, MLP, DEPTH = 64, 128, 1  # vit_micro's (models/vit.py MICRO), cut to one block here


def _config(family: str, method: str, **overrides):
    c = tiny("unused", **{"strategy.name": method, "strategy.lora.rank": RANK, "strategy.lora.alpha": ALPHA,
                          "strategy.lora.convs": family == "resnet"}, **overrides)
    if family == "vit":
        c.model.name, c.model.image_size = "vit_micro", 8
    return c


def _head(classes, width):
    return width * classes + classes


FORMULAS = {  # (family, method): (trainable count, lowest trainable unit, frozen units), 5 classes
    # LoRA: r (d_in + d_out) per adapted kernel: a ViT block's query, key, value, out (d x d), fc1, fc2 (d x mlp);
    # the patch embedding (unit 0) and the final norm (the last unit) untouched
    ("vit", "lora"): (DEPTH * (4 * RANK * 2 * WIDTH + 2 * RANK * (WIDTH + MLP)) + _head(5, WIDTH), 1, {0, 1 + DEPTH}),
    # SSF: a scale and a shift per channel after the patch conv, each block's 2 norms, 4 attention and 2 MLP
    # dense layers, and the final norm
    ("vit", "ssf"): (2 * WIDTH * (1 + DEPTH * (2 + 4 + 1) + 1) + 2 * MLP * DEPTH + _head(5, WIDTH), 0, set()),
    # the tiny ResNet (stage_sizes (1, 1), width 4): its one 1x1 conv, the projection 4 -> 8 in unit 2
    ("resnet", "lora"): (RANK * (4 + 8) + _head(5, 8), 2, {0, 1}),
    # SSF after its 6 BatchNorms (stem 4, block 1: 2 x 4, block 2: 3 x 8 channels); its convs have no bias
    ("resnet", "ssf"): (2 * (4 + 2 * 4 + 3 * 8) + _head(5, 8), 0, set()),
}


def _plain(family: str, rng) -> nnx.Module:
    """The plain model at random weights (the head too, so that the outputs depend on every unit; BatchNorm
    statistics too), allocated without compiling an initialiser."""
    model = models.zeros(_config(family, "lora").model, 5, 1)
    if family == "vit":  # patch embedding, the first block, final norm
        model.units = nnx.List([model.units[0], model.units[1], model.units[-1]])
    start = weights_lib.flat_state(model)
    start["params"] = {k: (rng.normal(size=v.shape) * 0.3 + k.endswith("scale")).astype(v.dtype)
                       for k, v in start["params"].items()}
    start["batch_stats"] = {k: (rng.uniform(0.5, 1.5, size=v.shape) if k.endswith(".var")
                                else rng.normal(size=v.shape) * 0.1).astype(v.dtype)
                            for k, v in start["batch_stats"].items()}
    weights_lib.assign(model, start)
    return model


def _forward(model, x) -> np.ndarray:
    """model(x) in inference mode, compiled once per model structure (the plain one's serves the merges)."""
    graphdef, state = nnx.split(model)
    return np.asarray(_apply(graphdef, state, x))


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x):
    return nnx.merge(graphdef, state)(x)


def _check_counts(cfg, family: str, method: str, model) -> None:
    """The trainable count, the lowest trainable unit and the frozen units of the strategy's one phase."""
    params = weights_lib.flat_state(model)["params"]
    paths = list(params)
    (phase,) = strategies.plan(cfg, num_units=model.num_units, frozen_depth=0, total_steps=4, steps_per_epoch=2,
                               paths=paths).phases
    count, lowest, frozen = FORMULAS[family, method]
    trained = freezing.trainable(phase.labels(paths))
    assert sum(params[k].size for k in trained) == count, method
    added = peft.is_lora if method == "lora" else peft.is_ssf
    assert set(trained) == {k for k in paths if k.startswith("head.") or added(k)}, method
    # what the feature cache and the inference-mode units follow: LoRA leaves a ViT's patch embedding and final
    # norm (and the ResNet's stem and first block) untouched; SSF touches every unit
    assert phase.lowest_trainable_unit(paths) == lowest and phase.frozen_units(paths) == frozen, method
    if method == "lora":  # the layer's own parameters keep their paths, the factors sit beside them
        layer = "units.1.attn.query" if family == "vit" else "units.2.proj"
        assert {f"{layer}.kernel", f"{layer}.lora.lora_a", f"{layer}.lora.lora_b"} <= set(paths)


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_counts_outputs_unchanged_at_init_and_merge_then_predict_equals_predict(family):
    rng = np.random.default_rng(0)
    plain = _plain(family, rng)
    x = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
    expected = _forward(plain, x)
    for method in ("lora", "ssf"):
        cfg = _config(family, method)
        model = strategies.extend(nnx.clone(plain), cfg)
        _check_counts(cfg, family, method, model)
        np.testing.assert_array_equal(_forward(model, x), expected, err_msg=method)  # B = 0; scale 1, shift 0
        # the added parameters at non-trivial values: the outputs move, and the merged plain model follows them
        flat = weights_lib.flat_state(model)
        for k in [k for k in flat["params"] if peft.is_lora(k) or peft.is_ssf(k)]:
            flat["params"][k] = (rng.normal(size=flat["params"][k].shape) * 0.5
                                 + k.endswith(peft.SSF_SCALE)).astype(np.float32)
        weights_lib.assign(model, flat)
        moved = _forward(model, x)
        assert np.abs(moved - expected).max() > 0.1, method
        merged = strategies.get(method).merge(flat["params"], cfg)
        target = nnx.clone(plain)
        assert set(merged) == set(weights_lib.flat_state(target)["params"]), method  # the plain model's paths
        weights_lib.assign(target, {"params": merged, "batch_stats": flat["batch_stats"]})
        np.testing.assert_allclose(_forward(target, x), moved, rtol=1e-4, atol=1e-4 * np.abs(moved).max(),
                                   err_msg=method)


def test_nothing_merges_for_other_strategies_or_with_merge_off():
    weights = {"params": {"units.0.conv.kernel": np.ones(3)}, "batch_stats": {}}
    assert strategies.merged(tiny("unused"), weights) is weights  # fine_tune: StrategyBase.merge
    assert strategies.merged(_config("resnet", "lora", **{"strategy.merge": False}), weights) is weights


def test_lora_targets_that_match_no_layer_are_one_line_config_errors(tiny_config):
    with pytest.raises(ConfigError) as e:  # the tiny ResNet has no dense layer in its units
        C.validate(tiny_config(**{"strategy.name": "lora"}))
    assert e.value.key == "strategy.lora.targets" and "convs=True" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="strategy.lora.targets"):
        C.validate(tiny_config(**{"strategy.name": "lora", "strategy.lora.targets": "("}))
    C.validate(tiny_config(**{"strategy.name": "lora", "strategy.lora.convs": True}))  # the 1x1 projection


def _params(directory) -> dict:
    return weights_lib.load_weights(directory)[0]["params"]


@pytest.mark.parametrize("method", ["lora", "ssf"])
def test_a_run_trains_only_its_parameters_resumes_exactly_and_exports_the_merged_plain_model(method, tiny_config,
                                                                                             tmp_path):
    # one evaluation, at the end: best/ is written there from the same weights as weights/ (unmerged, merged)
    over = {"strategy.name": method, "strategy.lora.rank": RANK, "strategy.lora.convs": True, "train.steps": 8,
            "train.eval_every": 8, "train.checkpoint_every": 4, "train.log_every": 1}
    cfg = tiny_config(**over)
    start = weights_lib.flat_state(setup.setup(cfg).model)["params"]  # extended, at its initial values
    cache = StepCache()
    whole = trainer.run(cfg, tmp_path / "whole", progress=False, cache=cache)
    part = trainer.run(cfg, tmp_path / "resumed", progress=False, cache=cache, stop_at_step=4)
    assert whole.status == "done" and part.status == "interrupted", whole.reason
    count, lowest, _ = FORMULAS["resnet", method]
    assert whole.metrics["trainable_params"] == count and whole.metrics["best_step"] == 8
    assert whole.metrics["frozen_depth_resolved"] == lowest  # LoRA: units 0, 1 untouched, their outputs cached
    assert whole.metrics["feature_path"] == ("cached@2" if method == "lora" else "input")
    # halfway: every added parameter and the head moved, nothing else did, and the loss fell
    with ocp.StandardCheckpointer() as ckptr:
        saved = ckptr.restore(tmp_path / "resumed" / "checkpoints" / "4" / "state")["params"]
    changed = {k for k, v in start.items() if not np.array_equal(np.asarray(saved[k]), v)}
    added = peft.is_lora if method == "lora" else peft.is_ssf
    assert changed == {k for k in start if k.startswith("head.") or added(k)}
    losses = [r["train_loss"] for r in map(json.loads, (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines())
              if "train_loss" in r]
    assert len(losses) == 8 and np.mean(losses[-2:]) < losses[0] - 0.01
    resumed = trainer.run(cfg, tmp_path / "resumed", progress=False, cache=cache)
    for key in ("val_accuracy", "test_accuracy", "test_loss", "best_step"):
        assert resumed.metrics[key] == whole.metrics[key], key
    # weights/: the merged plain model of best/ (which keeps the trained tree), the same after the resume
    exported, again, best = (_params(tmp_path / d / sub) for d, sub in (("whole", "weights"),
                                                                         ("resumed", "weights"), ("whole", "best")))
    assert set(exported) == {k for k in start if not added(k)} and set(best) == set(start)
    merged = strategies.get(method).merge(best, cfg)
    for k in exported:
        np.testing.assert_array_equal(exported[k], again[k], err_msg=k)
        np.testing.assert_allclose(exported[k], merged[k], rtol=1e-6, atol=1e-7, err_msg=k)
    # any later run starts from them: a plain fine-tuning run's units are the merged weights
    later = setup.setup(tiny_config(**{"init": str(tmp_path / "whole")}))
    units = {k: v for k, v in weights_lib.flat_state(later.model)["params"].items() if k.startswith("units.")}
    assert units and all(np.array_equal(v, exported[k]) for k, v in units.items())
