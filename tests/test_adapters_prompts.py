"""The adapter and VPT strategies (strategies/adapter.py, vpt.py; their modules: models/prompts_adapters.py).

Pure checks on built models first (trainable counts against the papers' formulas, outputs unchanged at
initialisation, a gradient into every up-projection), then one short run per method (on the 6-unit vit_micro at
8x8 px, the ResNet of the tiny config) checked for what trained, what moved, the loss, the feature cache and an
exact resume after a kill; last, what a run started from such a run's exported weights does.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny
from tl_research import config as C
from tl_research import models
from tl_research.checkpoints import weights as weights_lib
from tl_research.core.errors import ConfigError
from tl_research.finetune import strategies
from tl_research.models import vit
from tl_research.run import setup, steps, trainer

WIDTH, DEPTH, _, _ = vit.MICRO  # vit_micro: width 64, 4 encoder blocks
CLASSES = 5
VIT = {"model.name": "vit_micro", "model.image_size": 8}
METHODS = {  # id -> config overrides (on the tiny config)
    "houlsby": {**VIT, "strategy.name": "adapter"},
    "parallel": {**VIT, "strategy.name": "adapter", "strategy.adapter.placement": "parallel"},
    "resnet": {"strategy.name": "adapter"},
    "vpt_shallow": {**VIT, "strategy.name": "vpt_shallow"},
    "vpt_deep": {**VIT, "strategy.name": "vpt_deep"},
}


def _config(method, **more):
    return tiny("unused", **METHODS[method], **more)


def _built(method, extended=True):
    """The method's model (tiny config, seed 0), with a random classifier so that gradients reach the units."""
    cfg = _config(method)
    model = models.build(cfg.model, CLASSES, 1)
    k = model.head.classifier.kernel
    k.set_value(jnp.asarray(np.random.default_rng(1).normal(size=k.shape), jnp.float32))
    return strategies.extend(model, cfg) if extended else model


def _trainable(method, params: dict) -> dict[str, int]:
    """path -> size of the parameters (a model's flat `params`) the method's one phase trains."""
    units = 1 + max(int(k.split(".")[1]) for k in params if k.startswith("units."))
    plan = strategies.plan(_config(method), num_units=units, frozen_depth=0, total_steps=4, steps_per_epoch=2,
                           paths=list(params))
    (phase,) = plan.phases
    return {k: int(np.size(v)) for k, v in params.items() if phase.trainable(k)}


def _params(model) -> dict:
    return weights_lib.flat_state(model)["params"]


def _adapter(width, dim=8):
    return 2 * width * dim + dim + width  # down and up kernels, their biases


HEAD = WIDTH * CLASSES + CLASSES
COUNTS = {  # the trainable parameters of each method on the tiny configs
    # Houlsby: two adapters per block + the layer norms (two per block, the final norm unit's) + the head
    "houlsby": DEPTH * 2 * _adapter(WIDTH) + DEPTH * 2 * 2 * WIDTH + 2 * WIDTH + HEAD,
    "parallel": DEPTH * _adapter(WIDTH) + HEAD,  # AdaptFormer: one adapter per block + the head
    # ResNet (stem and two blocks of widths 4 and 8, the second projecting): an adapter after each block + the
    # BatchNorms' scales and biases + the head
    "resnet": _adapter(4) + _adapter(8) + 2 * (4 + 4 + 4 + 8 + 8 + 8) + 8 * CLASSES + CLASSES,
    "vpt_shallow": 10 * WIDTH * 1 + HEAD,  # prompts x width x 1
    "vpt_deep": 10 * WIDTH * DEPTH + HEAD,  # prompts x width x depth
}


def test_adapters_leave_the_outputs_unchanged_at_initialisation_and_train_the_papers_count():
    both = nnx.jit(lambda a, b, x: (a(x), b(x)))  # one compile per pair
    houlsby, parallel = _built("houlsby"), _built("parallel")
    for method, model in (("houlsby", houlsby), ("parallel", parallel)):
        assert sum(_trainable(method, _params(model)).values()) == COUNTS[method], method
        assert all(type(u) is not vit.EncoderBlock for u in model.units)  # every block took adapters
    # an encoder block computes what it computed before (the same block's weights, seed 0)
    tokens = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, WIDTH)), jnp.float32)
    plain = _built("houlsby", extended=False).units[1]
    for adapted in both(houlsby.units[1], parallel.units[1], tokens):
        np.testing.assert_array_equal(adapted, both(plain, plain, tokens)[0])
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 8, 8, 1)), jnp.float32)
    model = _built("resnet")
    assert sum(_trainable("resnet", _params(model)).values()) == COUNTS["resnet"]
    np.testing.assert_array_equal(*both(model, _built("resnet", extended=False), images))


def test_prompts_leave_the_shapes_the_final_norm_and_the_head_see_unchanged():
    x = jax.ShapeDtypeStruct((3, 8, 8, 1), np.float32)
    plain = _built("vpt_shallow", extended=False)
    shapes = lambda model: nnx.eval_shape(lambda m, x: m.features(x, return_units=True)[1], model, x)
    for method in ("vpt_shallow", "vpt_deep"):
        units = [u.shape for u in shapes(_built(method))]
        assert units[-2:] == [u.shape for u in shapes(plain)][-2:] == [(3, 5, WIDTH)] * 2  # class token + 2x2
        inner = (3, 15, WIDTH) if method == "vpt_shallow" else (3, 5, WIDTH)  # shallow blocks carry 10 prompts
        assert units[1:-2] == [inner] * (DEPTH - 1), method


def test_a_model_outside_the_families_is_refused_in_one_line(tiny_config):
    with pytest.raises(ConfigError) as e:
        C.validate(tiny_config(**{"strategy.name": "vpt_deep"}))  # resnet_cifar
    assert e.value.key == "model.name" and "vit_micro" in e.value.allowed and "\n" not in str(e.value)
    for overrides, key in (({"model.name": "vgg16", "strategy.name": "adapter"}, "model.name"),
                           ({"strategy.name": "adapter", "strategy.adapter.placement": "parallel"},
                            "strategy.adapter.placement"),
                           ({**VIT, "strategy.name": "adapter", "strategy.adapter.dim": 0}, "strategy.adapter.dim"),
                           ({**VIT, "strategy.name": "vpt_shallow", "strategy.vpt.prompts": 0}, "strategy.vpt.prompts"),
                           ({**VIT, "strategy.name": "vpt_shallow", "task": "segmentation"}, "strategy.name")):
        with pytest.raises(ConfigError) as e:
            strategies.check(tiny_config(**overrides))
        assert e.value.key == key, overrides


# ---------------------------------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """method -> its run whole, and the same run killed after step 2 and resumed (one step cache: one compile);
    each trained once, when a test first asks for it."""
    done = {}

    def get(method):
        if method not in done:
            root = tmp_path_factory.mktemp(method)
            # the last step's weights are exported (not the best eval's)
            cfg = tiny(data_dir, **METHODS[method], **{"train.steps": 4, "train.eval_every": 2, "train.log_every": 1,
                                                       "train.restore_best": False, "schedule.lr": 0.05})
            start = weights_lib.flat_state(setup.setup(cfg).model)["params"]
            cache = steps.StepCache()
            whole = trainer.run(cfg, root / "whole", progress=False, cache=cache)
            part = trainer.run(cfg, root / "resumed", progress=False, stop_at_step=2, cache=cache)
            resumed = trainer.run(cfg, root / "resumed", progress=False, cache=cache)
            assert (whole.status, part.status, resumed.status) == ("done", "interrupted", "done"), whole.reason
            done[method] = cfg, root, start, whole, resumed
        return done[method]
    return get


@pytest.mark.parametrize("method", ["houlsby", "vpt_shallow", "vpt_deep"])
def test_each_method_trains_exactly_its_parameters_and_resumes_exactly_after_a_kill(trained, method):
    cfg, root, start, whole, resumed = trained(method)
    final = weights_lib.load_weights(root / "whole" / "weights")[0]["params"]
    assert final.keys() == start.keys()
    trains = _trainable(method, start)
    changed = {k for k in start if not np.array_equal(final[k], start[k])}
    # every chosen parameter moved (an up-projection with no gradient would not), nothing else did
    assert changed == set(trains), (method, sorted(set(trains) - changed), sorted(changed - set(trains)))
    assert whole.metrics["trainable_params"] == sum(trains.values()) == COUNTS[method]
    losses = [m["train_loss"] for m in map(json.loads, (root / "whole" / "metrics.jsonl").read_text().splitlines())
              if "train_loss" in m]
    assert losses[-1] < losses[0], losses
    # the patch embedding is untouched: the first block is the lowest trainable unit, unit 0 a cached prefix
    assert whole.metrics["feature_path"] == "cached@1"
    for key in ("val_accuracy", "test_accuracy", "test_loss", "best_step"):
        assert resumed.metrics[key] == whole.metrics[key], key
    again = weights_lib.load_weights(root / "resumed" / "weights")[0]["params"]
    for k in final:
        np.testing.assert_array_equal(again[k], final[k], err_msg=k)


def test_a_run_starts_from_an_extended_run_s_weights_with_the_same_strategy_and_not_without(trained):
    cfg, root, _, _, _ = trained("houlsby")
    weights = weights_lib.load_weights(root / "whole" / "weights")[0]["params"]
    added = {k for k in weights if k.startswith("units.") and ("adapter" in k or k.endswith("prompts"))}
    again = C.copy_config(cfg)
    again.init, again.seed = str(root / "whole"), 1  # another seed: the added tensors still come from the run
    C.check_initial_weights(again)  # no ConfigError
    s = setup.setup(again)
    got = weights_lib.flat_state(s.model)["params"]
    assert added and all(np.array_equal(got[k], weights[k]) for k in added | {k for k in got if "norm" in k})
    assert f"{len(added)} added tensors loaded" in s.transfer_report
    plain = C.copy_config(again)
    plain.strategy.name = "fine_tune"
    with pytest.raises(ConfigError) as e:
        C.check_initial_weights(plain)
    assert e.value.key == "init" and "\n" not in str(e.value)
    assert f"strategy.name=fine_tune adds none of the {len(added)} tensors" in str(e.value), str(e.value)
