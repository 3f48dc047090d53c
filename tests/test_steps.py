"""The compiled steps' specs (tl_research.run.steps): a spec is hashable and is its step's StepCache key, so
runs whose steps are built from equal specs share one jitted function, and any field that differs builds
another."""
import dataclasses

from tl_research.finetune import recipes
from tl_research.finetune import regularizers
from tl_research.run import setup, steps


def _program(cfg, cache):
    return steps.Program(setup.setup(cfg), cfg, setup.mesh(cfg), cache)


def test_equal_specs_share_one_step_and_every_field_is_part_of_the_key(tiny_config):
    cache = steps.StepCache()
    a, b = _program(tiny_config(), cache), _program(tiny_config(**{"schedule.lr": 0.5}), cache)  # another model
    phase = a.s.plan.phases[-1]
    spec = a.train_spec(phase)
    assert spec == b.train_spec(phase) and hash(spec) == hash(b.train_spec(phase))
    assert a.s.model is not b.s.model and spec.net == b.train_spec(phase).net  # equal by the graphdef
    assert a.steps(phase).train is b.steps(phase).train  # the LR is a step input: one compiled step
    assert a.evaluate is b.evaluate and a.features is b.features
    other = {"frozen_depth": 1, "labels": (), "optimizer": (("name", "adam"),), "lr_multipliers": (("head", 2.0),),
             "weight_decay": 0.1, "l2sp": (0.1, 0.1), "update_stats": False, "accumulate": 2, "start_unit": 1,
             "precision": "bfloat16", "mean": (0.0,), "std": (2.0,), "value_range": (-1.0, 1.0),
             "objective": a.objective.for_eval(), "placement": None, "frozen_units": frozenset({2}),
             "sam": recipes.Sam(0.05), "ema": recipes.Ema(0.999, names=("head.classifier.kernel",)),
             "regularizer": regularizers.bss.BSS()}
    key_fields = {f.name for f in dataclasses.fields(steps.TrainSpec) if f.compare} - {"net", "mesh"}
    assert key_fields == set(other)  # a field added to TrainSpec gets a case here
    for name, value in other.items():
        changed = dataclasses.replace(spec, **{name: value})
        assert changed != spec and getattr(changed, name) != getattr(spec, name), name
    with_depth = _program(tiny_config(frozen_depth=1), cache)
    assert with_depth.train_spec(with_depth.s.plan.phases[-1]) != spec
    wide = _program(tiny_config(**{"model.width": 8}), cache)  # another architecture: another graphdef
    assert wide.train_spec(phase).net != spec.net and wide.steps(phase).train is not a.steps(phase).train


def test_a_spec_holds_mappings_as_items():
    spec = steps.TrainSpec(net=steps.Net("g", {}, {}), value_range=(0, 1), mean=[0.5], std=[0.5], mesh=setup.mesh(),
                           frozen_depth=0, labels={"b": "head", "a": "unit_0"}, optimizer={"name": "sgd"},
                           objective=None, lr_multipliers={"unit_0": 0.5, "head": 1.0})
    hash(spec)
    assert spec.label_map() == {"b": "head", "a": "unit_0"} and list(spec.label_map()) == ["b", "a"]
    assert spec.lr_multipliers == (("head", 1.0), ("unit_0", 0.5)) and spec.optimizer_config().name == "sgd"
    assert steps.Net("g", {"x": 1}, {}) == steps.Net("g", {}, {})  # the paths follow from the graphdef
