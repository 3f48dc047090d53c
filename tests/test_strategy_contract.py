"""The strategy contract: per-parameter phases, the registry, and a strategy plugged in from outside the package.

Phases are asked about the parameter paths of real (tiny or abstract) models; at the end, strategies defined in
this module run: a BitFit that trains exactly its parameters, and one whose `extend` adds a parameter that
trains, is checkpointed, resumed and exported like the model's own.
"""
import dataclasses
import json

import jax.numpy as jnp
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
from tl_research.models.base import Head, global_pool
from tl_research.run import setup, steps, trainer

BUILTIN = ("fine_tune", "feature_extraction", "two_phase", "gradual_unfreezing")


def _paths(model_cfg, num_classes=5, in_channels=1, abstract=False) -> tuple[list[str], int]:
    """The dotted parameter paths as the trainer names them (steps.split_model), and the model's unit count."""
    model = (models.abstract if abstract else models.build)(model_cfg, num_classes, in_channels)
    return list(steps.split_model(model)[1]), model.num_units


@pytest.fixture(scope="module")
def resnet_paths():
    return _paths(tiny("unused").model)


@pytest.fixture(scope="module")
def vit_paths():
    cfg = C.base_config().model
    cfg.name, cfg.image_size = "vit_ti16", 32
    return _paths(cfg, in_channels=3, abstract=True)


def _depth_rule(path: str, frozen_depth: int) -> bool:
    """The old rule, written out independently: the head trains, unit i trains iff i >= frozen_depth."""
    top, *rest = path.split(".")
    return top == "head" or (top == "units" and int(rest[0]) >= frozen_depth)


def _plan(name: str, num_units: int, frozen_depth: int, paths=(), **overrides):
    c = C.base_config()
    c.strategy.name = name
    c.strategy.boundary_steps = 4
    c.strategy.unfreeze_every_steps = 2
    for k, v in overrides.items():
        C.set_value(c, k, v)
    return strategies.plan(c, num_units=num_units, frozen_depth=frozen_depth, total_steps=20, steps_per_epoch=5,
                           paths=paths)


# ---------------------------------------------------------------------------------------------- the depth rule

@pytest.mark.parametrize("family", ["resnet_paths", "vit_paths"])
def test_every_builtin_phase_trains_exactly_the_old_depth_rule_per_parameter(family, request):
    paths, num_units = request.getfixturevalue(family)
    assert all(p.startswith(("units.", "head.")) for p in paths)
    seen = 0
    for name in BUILTIN:
        for fd in range(num_units if name == "two_phase" else num_units + 1):
            if name == "feature_extraction" and fd not in (0, num_units):
                continue
            for phase in _plan(name, num_units, fd, paths).phases:
                expected = {p for p in paths if _depth_rule(p, phase.frozen_depth)}
                assert {p for p in paths if phase.trainable(p)} == expected, (name, phase)
                # the optimizer labels are the old ones, group and no-decay suffix included
                assert phase.labels(paths) == freezing.labels(paths, phase.frozen_depth)
                assert phase.lowest_trainable_unit(paths) == phase.frozen_depth
                assert phase.frozen_units(paths) == set(range(phase.frozen_depth))
                seen += 1
    assert seen > 2 * num_units


def test_builtin_phases_record_only_their_four_fields():
    # the run's resolved config lists dataclasses.asdict(phase): unchanged by the per-parameter contract
    phase = _plan("two_phase", 3, 1).phases[1]
    assert dataclasses.asdict(phase) == {"name": "fine_tune", "start": 4, "end": 20, "frozen_depth": 1}
    assert type(phase) is strategies.Phase


def test_the_lowest_trainable_unit_and_the_frozen_units_follow_a_rule_that_is_not_the_depth_rule(resnet_paths):
    paths, num_units = resnet_paths

    @dataclasses.dataclass(frozen=True)
    class UnitTwoAndHead(strategies.Phase):
        def trainable(self, path):
            return path.startswith(("units.2.", "head."))

    @dataclasses.dataclass(frozen=True)
    class HeadOnly(strategies.Phase):
        def trainable(self, path):
            return path.startswith("head.")

    @dataclasses.dataclass(frozen=True)
    class FirstUnitAndHead(strategies.Phase):  # surgical fine-tuning of the first block
        def trainable(self, path):
            return path.startswith(("units.0.", "head."))

    assert UnitTwoAndHead("x", 0, 1, 0).lowest_trainable_unit(paths) == 2  # not its frozen_depth field
    assert UnitTwoAndHead("x", 0, 1, 0).frozen_units(paths) == {0, 1}
    assert HeadOnly("x", 0, 1, 0).lowest_trainable_unit(paths) == num_units
    assert HeadOnly("x", 0, 1, 0).frozen_units(paths) == set(range(num_units))
    first = FirstUnitAndHead("x", 0, 1, 0)
    assert first.lowest_trainable_unit(paths) == 0 and first.frozen_units(paths) == set(range(1, num_units))


# ---------------------------------------------------------------------------------------------- a toy strategy

@dataclasses.dataclass(frozen=True)
class BiasPhase(strategies.Phase):
    """Trains the biases (of units and head alike) and nothing else."""

    def trainable(self, path: str) -> bool:
        return path.endswith(".bias")


class BiasesOnly(strategies.StrategyBase):
    name = "toy_biases_only"

    def phases(self, config, ctx):
        return [BiasPhase("biases", 0, ctx.total_steps, 0)]


@pytest.fixture
def toy():
    strategy = strategies.register(BiasesOnly())
    yield strategy
    strategies.unregister(strategy.name)


def test_a_strategy_registered_from_outside_is_a_valid_config_value(toy, tiny_config):
    assert toy.name in strategies.NAMES and strategies.get(toy.name) is toy
    C.validate(tiny_config(**{"strategy.name": toy.name}))  # no ConfigError


def test_the_toy_strategy_trains_exactly_the_bias_paths(toy, resnet_paths):
    paths, num_units = resnet_paths
    plan = _plan(toy.name, num_units, 0, paths)
    (phase,) = plan.phases
    assert (phase.start, phase.end) == (0, 20)
    biases = sorted(p for p in paths if p.rsplit(".", 1)[1] == "bias")
    assert len(biases) >= 3 and len(biases) < len(paths)
    assert freezing.trainable(phase.labels(paths)) == biases
    assert phase.lowest_trainable_unit(paths) == 0  # units.0.bn.bias trains
    # the shared parts of the plan come as for any strategy
    assert plan.lr_multipliers == _plan("fine_tune", num_units, 0).lr_multipliers
    model = models.build(tiny("unused").model, 5, 1)
    assert strategies.extend(model, tiny("unused", **{"strategy.name": toy.name})) is model


def test_an_unknown_name_is_one_line_naming_every_registered_strategy(toy, tiny_config):
    with pytest.raises(ConfigError) as e:
        C.validate(tiny_config(**{"strategy.name": "biases_onyl"}))
    assert e.value.key == "strategy.name" and "\n" not in str(e.value)
    assert e.value.allowed == ", ".join(BUILTIN + ("bitfit", "norm_only", "lora", "ssf", "adapter", "vpt_shallow",
                                                   "vpt_deep", toy.name))


def test_without_registration_the_toy_name_is_refused(tiny_config):
    assert BiasesOnly.name not in strategies.NAMES
    with pytest.raises(ConfigError, match="config.strategy.name='toy_biases_only' is not allowed"):
        C.validate(tiny_config(**{"strategy.name": BiasesOnly.name}))


def test_the_registry_refuses_a_taken_name_and_an_object_that_is_no_strategy(toy):
    with pytest.raises(ValueError, match="already registered"):
        strategies.register(BiasesOnly())
    strategies.register(toy)  # the same object again is fine
    with pytest.raises(TypeError, match="lacks"):
        strategies.register(type("NoPhases", (), {"name": "no_phases"})())
    assert "no_phases" not in strategies.NAMES


def test_phases_that_do_not_tile_the_run_are_a_strategy_bug(toy, monkeypatch):
    monkeypatch.setattr(toy, "phases", lambda config, ctx: [BiasPhase("biases", 0, ctx.total_steps - 1, 0)])
    with pytest.raises(ValueError, match="do not tile"):
        _plan(toy.name, 3, 0)


# ---------------------------------------------------------------------------------------------- toy strategies in a run

@dataclasses.dataclass(frozen=True)
class BitFitPhase(strategies.Phase):
    """BitFit (Ben Zaken et al. 2021, arXiv 2106.10199): the biases and the new task's head. (The biases alone
    would leave every unit's bias where it started: the head's classifier starts at zero, so no gradient reaches
    the units while its kernel is frozen.)"""

    def trainable(self, path: str) -> bool:
        return path.endswith(".bias") or path.startswith("head.")


class BitFit(strategies.StrategyBase):
    name = "toy_bitfit"

    def phases(self, config, ctx):
        return [BitFitPhase("bitfit", 0, ctx.total_steps, 0)]


@dataclasses.dataclass(frozen=True)
class TopUnitPhase(strategies.Phase):
    """The top unit and the head; its frozen_depth field says 0, its rule says otherwise."""

    def trainable(self, path: str) -> bool:
        return path.startswith(("units.2.", "head."))


class TopUnit(strategies.StrategyBase):
    name = "toy_top_unit"

    def phases(self, config, ctx):
        return [TopUnitPhase("top", 0, ctx.total_steps, 0)]


class ScaledHead(nnx.Module):
    """The model's head with a learnable per-channel scale on its pooled features: a parameter `extend` adds."""

    def __init__(self, head: Head):
        self.pool, self.dropout_rate, self.hidden, self.classifier = (head.pool, head.dropout_rate, head.hidden,
                                                                      head.classifier)
        self.scale = nnx.Param(jnp.ones((head.classifier.in_features,), jnp.float32))

    def __call__(self, x, *, train: bool = False, dropout_key=None):
        return Head.__call__(self, global_pool(x, self.pool) * self.scale[...], train=train, dropout_key=dropout_key)


class HeadScale(strategies.StrategyBase):
    """Fine-tuning (the depth rule at frozen_depth) with a per-channel scale added to the head."""

    name = "toy_head_scale"

    def phases(self, config, ctx):
        return [strategies.Phase("train", 0, ctx.total_steps, ctx.frozen_depth)]

    def extend(self, model, config):
        model.head = ScaledHead(model.head)
        return model


@pytest.fixture
def registered():
    """Registers strategy objects for one test, unregistering them after it."""
    added = []
    yield lambda strategy: added.append(strategies.register(strategy)) or strategy
    for strategy in added:
        strategies.unregister(strategy.name)


def _params(directory) -> dict:
    return weights_lib.load_weights(directory)[0]["params"]


def test_a_run_of_a_strategy_from_outside_trains_exactly_its_parameters(registered, tiny_config, tmp_path):
    toy = registered(BitFit())
    cfg = tiny_config(**{"strategy.name": toy.name, "train.steps": 6, "train.eval_every": 3})
    start = weights_lib.flat_state(setup.setup(cfg).model)["params"]  # the run's initial weights
    result = trainer.run(cfg, tmp_path / "run", progress=False)
    assert result.status == "done", result.reason
    final = _params(tmp_path / "run" / "weights")
    assert final.keys() == start.keys()
    changed = {k for k in start if not np.array_equal(final[k], start[k])}
    expected = {k for k in start if k.endswith(".bias") or k.startswith("head.")}
    assert any(k.startswith("units.0.") for k in expected) and any(k.endswith(".kernel") for k in start)
    assert changed == expected  # every bias of every unit trained; no kernel or scale of a unit moved
    recorded = json.loads((tmp_path / "run" / trainer.RESULT_FILE).read_text())["metrics"]
    assert recorded["trainable_params"] == sum(start[k].size for k in expected)
    assert recorded["frozen_depth_resolved"] == 0  # the lowest unit that trains: units.0's biases


def test_the_units_below_the_lowest_one_a_phase_trains_are_a_cached_frozen_prefix(registered, tiny_config,
                                                                                   tmp_path):
    toy = registered(TopUnit())
    cfg = tiny_config(**{"strategy.name": toy.name, "train.steps": 6, "train.eval_every": 3})
    start = weights_lib.flat_state(setup.setup(cfg).model)
    result = trainer.run(cfg, tmp_path / "run", progress=False)
    assert result.status == "done", result.reason
    m = result.metrics
    assert m["feature_path"] == "cached@2" and m["frozen_depth_resolved"] == 2  # from the rule, not the field
    assert m["trainable_params"] == sum(v.size for k, v in start["params"].items()
                                        if k.startswith(("units.2.", "head.")))
    final, _ = weights_lib.load_weights(tmp_path / "run" / "weights")
    for coll in ("params", "batch_stats"):  # below it: inference mode, bitwise the starting weights
        for k, v in start[coll].items():
            if k.startswith(("units.0.", "units.1.")):
                np.testing.assert_array_equal(final[coll][k], v, err_msg=k)
    assert all(not np.array_equal(final["params"][k], v) for k, v in start["params"].items()
               if k.startswith("units.2.") and k.endswith(".kernel"))


def test_a_parameter_a_strategy_adds_trains_is_checkpointed_resumed_and_exported(registered, tiny_config,
                                                                                 tmp_path):
    toy = registered(HeadScale())
    # the last step's weights are exported (not the best eval's)
    cfg = tiny_config(**{"strategy.name": toy.name, "train.steps": 8, "train.eval_every": 4,
                         "train.restore_best": False})
    base = weights_lib.flat_state(setup.setup(tiny_config()).model)["params"]
    channels = base["head.classifier.kernel"].shape[0]  # of the pooled features the scale multiplies
    whole = trainer.run(cfg, tmp_path / "whole", progress=False)
    part = trainer.run(cfg, tmp_path / "resumed", progress=False, stop_at_step=4)
    assert whole.status == "done" and part.status == "interrupted", whole.reason
    # the checkpoint holds the added parameter as trained so far
    with ocp.StandardCheckpointer() as ckptr:
        saved = ckptr.restore(tmp_path / "resumed" / "checkpoints" / "4" / "state")
    scale4 = np.asarray(saved["params"]["head.scale"])
    assert scale4.shape == (channels,) and not np.array_equal(scale4, np.ones(channels))
    resumed = trainer.run(cfg, tmp_path / "resumed", progress=False)
    assert resumed.status == "done"
    for key in ("val_accuracy", "test_accuracy", "test_loss", "best_step"):
        assert resumed.metrics[key] == whole.metrics[key], key
    # exported with the rest, trained further, and the same after the resume as without it
    final, again = _params(tmp_path / "whole" / "weights"), _params(tmp_path / "resumed" / "weights")
    assert final.keys() == again.keys() == set(base) | {"head.scale"}
    for k in final:
        np.testing.assert_array_equal(final[k], again[k], err_msg=k)
    assert not np.array_equal(final["head.scale"], scale4)
    assert whole.metrics["trainable_params"] == sum(v.size for v in base.values()) + channels
