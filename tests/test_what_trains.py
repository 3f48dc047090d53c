"""What trains, chosen freely: strategy.trainable_units, strategy.trainable rules, and the bitfit and norm_only
strategies. Counts are checked against formulas computed from the model's own module tree; tiny runs check that
exactly the chosen parameters (and BatchNorm statistics) moved."""
import jax
import numpy as np
import pytest
from flax import nnx

from conftest import tiny
from tl_research import config as C
from tl_research import models
from tl_research.checkpoints import weights as weights_lib
from tl_research.core.errors import ConfigError
from tl_research.finetune import freezing, strategies
from tl_research.run import setup, trainer

NORMS = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm)


def _modules(model):
    """(dotted module path, module) for every module of the model, from its graph (not from parameter names)."""
    return [(".".join(map(str, p)), m) for p, m in nnx.iter_graph(model) if isinstance(m, nnx.Module)]


def _head_size(model) -> int:
    return sum(int(np.size(v)) for v in jax.tree.leaves(nnx.state(model.head, nnx.Param)))


def _bias_entries(model) -> int:
    """Entries of every `bias` parameter a module of the units holds."""
    return sum(int(np.size(m.bias[...])) for path, m in _modules(model)
               if path.startswith("units.") and isinstance(getattr(m, "bias", None), nnx.Param))


def _norm_paths(model) -> set[str]:
    return {f"{path}.{leaf}" for path, m in _modules(model) if isinstance(m, NORMS) and path.startswith("units.")
            for leaf in ("scale", "bias") if isinstance(getattr(m, leaf, None), nnx.Param)}


def _run(cfg, directory):
    start = weights_lib.flat_state(setup.setup(cfg).model)
    result = trainer.run(cfg, directory, progress=False)
    assert result.status == "done", result.reason
    final, _ = weights_lib.load_weights(directory / "weights")
    changed = {coll: {k for k, v in start[coll].items() if not np.array_equal(final[coll][k], v)}
               for coll in ("params", "batch_stats")}
    return start, result.metrics, changed


def _cfg(tiny_config, **kw):
    return tiny_config(**{"train.steps": 6, "train.eval_every": 3, "train.restore_best": False, **kw})


def test_bitfit_trains_exactly_the_biases_and_the_head_and_counts_them(tiny_config, tmp_path):
    cfg = _cfg(tiny_config, **{"strategy.name": "bitfit"})
    model = setup.setup(cfg).model
    start, metrics, changed = _run(cfg, tmp_path / "run")
    expected = {k for k in start["params"] if k.endswith(".bias") or k.startswith("head.")}
    assert changed["params"] == expected
    assert metrics["trainable_params"] == _bias_entries(model) + _head_size(model)


def test_norm_only_trains_exactly_the_normalisation_parameters_and_the_head(tiny_config, tmp_path):
    cfg = _cfg(tiny_config, **{"strategy.name": "norm_only"})
    model = setup.setup(cfg).model
    norms = _norm_paths(model)
    assert norms and all(k.endswith((".scale", ".bias")) for k in norms)
    start, metrics, changed = _run(cfg, tmp_path / "run")
    head = {k for k in start["params"] if k.startswith("head.")}
    assert changed["params"] == norms | head
    assert metrics["trainable_params"] == sum(start["params"][k].size for k in norms | head)


def test_the_norm_rule_finds_every_family_s_normalisation_parameters_and_nothing_else():
    from tl_research.finetune.strategies.norm_only import is_norm
    for name in ("resnet50", "resnetv2_50x1_bit", "densenet121", "vit_ti16", "mobilenet_v3_small", "vgg16"):
        cfg = C.base_config().model
        cfg.name = name
        model = models.abstract(cfg, 5, 3)
        paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
        assert {p for p in paths if p.startswith("units.") and is_norm(p)} == _norm_paths(model), name


def test_trainable_units_first_block_only(tiny_config, tmp_path):
    cfg = _cfg(tiny_config, **{"strategy.trainable_units": (0,)})
    s = setup.setup(cfg)
    (phase,) = s.plan.phases
    assert s.depth(phase) == 0 and phase.frozen_units(s.param_names) == {1, 2}
    start, _, changed = _run(cfg, tmp_path / "run")
    # the backward pass reaches unit 0 through the frozen units 1 and 2: every kernel of unit 0 moved
    assert changed["params"] == {k for k in start["params"] if k.startswith(("units.0.", "head."))}
    # units 1 and 2 ran in inference mode: their BatchNorm statistics did not move; unit 0's did
    assert changed["batch_stats"] == {k for k in start["batch_stats"] if k.startswith("units.0.")}
    assert changed["batch_stats"]


def test_trainable_units_of_the_top_reports_the_lowest_trainable_unit(tiny_config):
    s = setup.setup(_cfg(tiny_config, **{"strategy.trainable_units": (2,)}))
    (phase,) = s.plan.phases
    assert s.model.num_units == 3 and s.depth(phase) == 2 and s.frozen_depth == 2
    assert freezing.trainable(s.labels(phase)) == sorted(p for p in s.param_names
                                                         if p.startswith(("units.2.", "head.")))


def test_rules_first_match_wins_and_an_uncovered_parameter_is_one_line(tiny_config):
    rules = ((r"units\.1\..*\.kernel", "freeze"), (r"units\.1\.", "train"), (r"head\.", "train"), (".*", "freeze"))
    s = setup.setup(_cfg(tiny_config, **{"strategy.trainable": rules}))
    expected = sorted(p for p in s.param_names
                      if p.startswith("head.") or (p.startswith("units.1.") and not p.endswith(".kernel")))
    assert freezing.trainable(s.labels(s.plan.phases[0])) == expected
    with pytest.raises(ConfigError) as e:
        setup.setup(_cfg(tiny_config, **{"strategy.trainable": ((r"units\.", "train"),)}))
    assert e.value.key == "strategy.trainable" and "\n" not in str(e.value) and "'head." in str(e.value)


@pytest.mark.parametrize("key, value", [("strategy.trainable", (("units", "keep"),)),
                                        ("strategy.trainable", (("(", "train"),)),
                                        ("strategy.trainable", "units"),
                                        ("strategy.trainable_units", (0, 0)),
                                        ("strategy.trainable_units", (-1,))])
def test_bad_syntax_is_refused_by_validate(tiny_config, key, value):
    with pytest.raises(ConfigError) as e:
        C.validate(tiny_config(**{key: value}))
    assert e.value.key == key and "\n" not in str(e.value)


def test_a_unit_past_the_model_is_refused_at_setup(tiny_config):
    with pytest.raises(ConfigError, match="strategy.trainable_units.*3 depth units"):
        setup.setup(_cfg(tiny_config, **{"strategy.trainable_units": (3,)}))
    # a chosen unit the strategy never trains (below frozen_depth) would silently train nothing
    with pytest.raises(ConfigError, match=r"strategy.trainable_units=\(0,\).*unit\(s\) 0 train in no phase"):
        setup.setup(_cfg(tiny_config, frozen_depth=2, **{"strategy.trainable_units": (0,)}))


def test_the_selection_restricts_each_phase_of_a_phased_strategy():
    c = tiny("unused", **{"strategy.name": "two_phase", "strategy.boundary_steps": 4, "strategy.trainable_units": (0,)})
    paths = [f"units.{i}.conv.kernel" for i in range(3)] + ["head.classifier.kernel"]
    head, rest = strategies.plan(c, num_units=3, frozen_depth=0, total_steps=10, steps_per_epoch=5,
                                 paths=paths).phases
    assert [p for p in paths if head.trainable(p)] == ["head.classifier.kernel"]  # LP-FT's head phase stays so
    assert [p for p in paths if rest.trainable(p)] == ["units.0.conv.kernel", "head.classifier.kernel"]
    # the defaults leave the strategy's phases as they were (every existing config plans as before)
    plain = strategies.plan(tiny("unused"), num_units=3, frozen_depth=1, total_steps=10, steps_per_epoch=5)
    assert type(plain.phases[0]) is strategies.Phase


def test_sweep_axes_over_both_keys_give_distinct_valid_runs(tiny_config):
    points = C.product(C.axis("strategy.trainable_units", [(), (0,), (1, 2)]),
                       C.axis("strategy.trainable", [(), ((r"units\.0\.", "train"), (".*", "freeze"))]))
    ids = {C.run_id(p) for p in points}
    assert len(ids) == len(points) == 6
    # regexes the readable slug blurs (`.*` and `.+`) still give two runs, not one
    blurred = C.axis("strategy.trainable", [((r"units\.0\.", "train"), (".*", "freeze")),
                                            ((r"units\.0\.", "train"), (".+", "freeze"))])
    assert len({C.run_id(p) for p in blurred}) == 2
    for p in points:
        # a launcher hands a worker its point as JSON: the pairs come back as lists
        as_json = {k: [list(r) if isinstance(r, tuple) else r for r in v] for k, v in p.items()}
        C.validate(C.apply_overrides(tiny_config(), as_json))
    # at their defaults the keys are left out of a config's identity: existing workdirs keep theirs
    assert not {"trainable_units", "trainable"} & set(C.identity(tiny_config().to_dict())["strategy"])
