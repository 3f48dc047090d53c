"""The strategy contract: per-parameter phases, the registry, and a strategy plugged in from outside the package.

Nothing here trains: phases are asked about the parameter paths of real (tiny or abstract) models.
"""
import dataclasses

import pytest

from conftest import tiny
from tl_research import config as C
from tl_research import models
from tl_research.core.errors import ConfigError
from tl_research.finetune import freezing, strategies
from tl_research.run import steps

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
    assert e.value.allowed == ", ".join(BUILTIN + (toy.name,))


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
