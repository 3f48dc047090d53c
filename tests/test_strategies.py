"""Fine-tuning strategies: phases and their switch, gradual unfreezing, discriminative LRs, L2-SP, BN policy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from conftest import tiny
from tl_research import config as C
from tl_research.finetune import freezing, strategies
from tl_research import models
from tl_research.run import loop, setup, steps, trainer
from tl_research.tasks.classification import task as classification
from tl_research.checkpoints import weights as W
from tl_research.core.errors import ConfigError
from tl_research.core.tracking import read_metrics


@pytest.fixture(scope="module")
def source(data_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("strategy_source") / "source"
    r = trainer.run(tiny(data_dir, **{"data.classes": (5, 6, 7, 8, 9), "train.steps": 6}), d, progress=False)
    assert r.status == "done", r.reason
    return str(d)


def _run(cfg, path):
    r = trainer.run(cfg, path, progress=False)
    assert r.status == "done", r.reason
    return r


def _unit_sizes(weights_dir) -> dict:
    params = W.load_weights(weights_dir)[0]["params"]
    sizes = {}
    for name, v in params.items():
        sizes[freezing.group_of(name)] = sizes.get(freezing.group_of(name), 0) + np.size(v)
    return sizes


# ---------------------------------------------------------------------------------------------- plans

def test_plans_place_the_phase_boundaries_where_the_config_says():
    c = C.base_config()
    c.strategy.name = "two_phase"
    c.strategy.boundary_steps = 5
    c.strategy.head_schedule.lr = 0.3
    c.schedule.name, c.schedule.lr = "one_cycle", 0.01
    p = strategies.plan(c, num_units=3, frozen_depth=1, total_steps=12, steps_per_epoch=4)
    assert [(ph.name, ph.start, ph.end, ph.frozen_depth) for ph in p.phases] == [
        ("head", 0, 5, 3), ("fine_tune", 5, 12, 1)]
    np.testing.assert_allclose(p.lrs[:5], 0.3)
    assert p.lrs[5] == pytest.approx(0.01 / 25)  # the phase-2 schedule starts afresh at the boundary
    assert 0.009 < p.lrs[5:].max() <= 0.01
    assert [p.phase_index(t) for t in (0, 4, 5, 11, 12)] == [0, 0, 1, 1, 1]

    c.strategy.boundary_steps, c.strategy.boundary_epochs = 0, 1.5
    p = strategies.plan(c, num_units=3, frozen_depth=0, total_steps=12, steps_per_epoch=4)
    assert p.phases[0].end == 6

    g = C.base_config()
    g.strategy.name, g.strategy.unfreeze_every_steps = "gradual_unfreezing", 3
    p = strategies.plan(g, num_units=3, frozen_depth=0, total_steps=12, steps_per_epoch=4)
    assert [(ph.start, ph.end, ph.frozen_depth) for ph in p.phases] == [(0, 3, 3), (3, 6, 2), (6, 9, 1), (9, 12, 0)]
    p = strategies.plan(g, num_units=3, frozen_depth=2, total_steps=12, steps_per_epoch=4)
    assert [(ph.start, ph.end, ph.frozen_depth) for ph in p.phases] == [(0, 3, 3), (3, 12, 2)]
    assert p.shortfall is None
    g.strategy.unfreeze_every_steps, g.strategy.unfreeze_every_epochs = 0, 2.0  # 8 steps: the run ends first
    p = strategies.plan(g, num_units=3, frozen_depth=0, total_steps=12, steps_per_epoch=4)
    assert [(ph.start, ph.end, ph.frozen_depth) for ph in p.phases] == [(0, 8, 3), (8, 12, 2)]
    # a plan made where validation could not refuse it: the run warns and records where it stopped
    assert p.shortfall.frozen_depth_reached == 2 and p.shortfall.key == "strategy.unfreeze_every_epochs"
    columns = loop.plan_columns(p, {"metric": 0.5, "step": 8, "phase": "head", "val_metric": 0.5, "val_loss": 1.0},
                                "accuracy")
    assert columns == {"best_any_phase_val_accuracy": 0.5, "best_any_phase_val_loss": 1.0, "best_any_phase_step": 8,
                       "best_any_phase_name": "head", "frozen_depth_reached": 2,
                       "plan_shortfall": p.shortfall.why}
    assert loop.plan_columns(strategies.plan(C.base_config(), num_units=3, frozen_depth=0, total_steps=12,
                                             steps_per_epoch=4), {"step": 12}, "accuracy") == {}  # one phase


def test_discriminative_multipliers_divide_by_the_decay_per_unit_below_the_head():
    c = C.base_config()
    c.strategy.lr_decay = 2.6
    p = strategies.plan(c, num_units=3, frozen_depth=0, total_steps=10, steps_per_epoch=5)
    assert p.lr_multipliers == pytest.approx({"head": 1.0, "unit_2": 1 / 2.6, "unit_1": 1 / 2.6**2,
                                              "unit_0": 1 / 2.6**3})


@pytest.mark.parametrize("overrides, key", [
    ({"strategy.name": "fine-tune"}, "strategy.name"),
    ({"strategy.name": "feature_extraction", "frozen_depth": 2}, "strategy.name"),
    ({"strategy.regularizer": "l2_sp"}, "strategy.regularizer"),  # init is scratch: nothing to pull towards
    ({"strategy.lr_decay": 0.5}, "strategy.lr_decay"),
    ({"strategy.bn": "frozen"}, "strategy.bn"),
    ({"strategy.name": "two_phase", "strategy.head_schedule.name": "cyclic"}, "strategy.head_schedule.name"),
])
def test_bad_strategy_values_name_their_key(tiny_config, overrides, key):
    with pytest.raises(ConfigError) as e:
        C.validate(tiny_config(**overrides))
    assert e.value.key == key and "allowed" in str(e.value)


def test_phases_the_run_ends_before_are_refused_when_the_config_is_validated(tiny_config):
    with pytest.raises(ConfigError, match="strategy.boundary_steps=12"):
        C.validate(tiny_config(**{"strategy.name": "two_phase", "strategy.boundary_steps": 12}))
    # 3 units unfrozen one every 5 steps need 15 steps: the run's 12 would stop at frozen depth 1
    gradual = {"strategy.name": "gradual_unfreezing", "strategy.unfreeze_every_steps": 5}
    with pytest.raises(ConfigError) as e:
        C.validate(tiny_config(**gradual))
    assert e.value.key == "strategy.unfreeze_every_steps" and "\n" not in str(e.value)
    assert str(e.value) == (
        "config.strategy.unfreeze_every_steps=5 is not allowed (unfreezing a unit every 5 steps from the head "
        "down to frozen_depth=0 (3 unfreezings) needs more than 15 steps; the run's 12 stop at frozen depth 1); "
        "allowed: at most 3 steps, or train.steps above 15, or frozen_depth >= 1")
    C.validate(tiny_config(frozen_depth=1, **gradual))  # 2 unfreezings by step 10: reached


# ---------------------------------------------------------------------------------------------- runs

def test_two_phase_trains_the_head_alone_then_switches_at_the_boundary(tiny_config, source, tmp_path):
    common = {"init": source, "train.steps": 10, "train.log_every": 1, "train.eval_every": 5}
    # phase 2 at an LR that harms it (0.5): the head-only phase's last eval is the best of the run on val
    cfg = tiny_config(**common, **{"strategy.name": "two_phase", "strategy.boundary_steps": 4,
                                   "strategy.head_schedule.lr": 0.2, "schedule.lr": 0.5})
    whole = _run(cfg, tmp_path / "whole")
    rows = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    lrs = {r["step"]: r["learning_rate"] for r in rows if "learning_rate" in r}
    np.testing.assert_allclose([lrs[t] for t in range(1, 5)], 0.2, rtol=1e-6)
    np.testing.assert_allclose([lrs[t] for t in range(5, 11)], 0.5, rtol=1e-6)
    sizes = _unit_sizes(source + "/weights")
    head = 8 * 5 + 5
    starts = [(r["step"], r["phase"], r["trainable_params"]) for r in rows if r.get("event") == "phase_start"]
    assert starts == [(0, 1, head), (4, 2, head + sum(v for k, v in sizes.items() if k != "head"))]
    assert whole.metrics["phase1_step"] == 4
    assert whole.metrics["strategy_resolved"] == "two_phase, phases at 4, no weight decay"

    # the run reports its final phase's best step (val, test, weights/ and best/); the head phase's, better on
    # val, is in its own columns
    m, val = whole.metrics, {r["step"]: r["val_accuracy"] for r in rows if "val_accuracy" in r and "event" not in r}
    final = max((t for t in val if t > 4), key=lambda t: (val[t], -t))  # the earliest of equals
    assert val[4] > max(val[t] for t in val if t > 4)  # the construction holds
    assert (m["best_step"], m["val_accuracy"]) == (final, val[final])
    assert (m["best_any_phase_step"], m["best_any_phase_name"], m["best_any_phase_val_accuracy"]) == (4, "head", val[4])
    exported, best = (W.load_weights(tmp_path / "whole" / d)[0]["params"] for d in ("weights", "best"))
    start = W.load_weights(source + "/weights")[0]["params"]
    assert all(np.array_equal(exported[k], best[k]) for k in best)
    assert not np.array_equal(exported["units.2.conv1.kernel"], start["units.2.conv1.kernel"])  # phase 2's

    # phase 1 is exactly a 4-step linear probe at the head schedule's LR
    probe = _run(tiny_config(**{**common, "strategy.name": "feature_extraction", "train.steps": 4,
                                "schedule.lr": 0.2}), tmp_path / "probe")
    assert whole.metrics["phase1_val_accuracy"] == probe.metrics["val_accuracy"]
    assert whole.metrics["phase1_test_accuracy"] == probe.metrics["test_accuracy"]

    # killed right at the boundary, then in phase 2 (after its first eval's checkpoint, step 5), the run
    # resumes each time and ends where the whole run did
    for stop in (4, 7):
        part = trainer.run(cfg, tmp_path / "resumed", progress=False, stop_at_step=stop)
        assert part.status == "interrupted"
    resumed = _run(cfg, tmp_path / "resumed")
    for key in ("val_accuracy", "test_accuracy", "test_loss", "phase1_test_accuracy", "best_step",
                "best_any_phase_step", "best_any_phase_name", "best_any_phase_val_accuracy"):
        assert resumed.metrics[key] == whole.metrics[key], key


def test_gradual_unfreezing_adds_one_unit_at_a_time_and_its_bn_statistics_from_then_on(
        tiny_config, source, tmp_path):
    sizes = _unit_sizes(source + "/weights")
    cfg = tiny_config(init=source, **{"strategy.name": "gradual_unfreezing", "strategy.unfreeze_every_steps": 3,
                                      "train.steps": 12, "train.restore_best": False})
    _run(cfg, tmp_path / "gradual")
    rows = read_metrics(tmp_path / "gradual" / "metrics.jsonl")
    starts = [(r["step"], r["frozen_depth"], r["trainable_params"]) for r in rows if r.get("event") == "phase_start"]
    head = sizes["head"]
    assert starts == [(0, 3, head), (3, 2, head + sizes["unit_2"]),
                      (6, 1, head + sizes["unit_2"] + sizes["unit_1"]),
                      (9, 0, head + sizes["unit_2"] + sizes["unit_1"] + sizes["unit_0"])]

    # stopped after the top unit was unfrozen: units below are untouched, the top unit's weights and
    # BatchNorm statistics moved (policy 'update'), or only its weights (policy 'source')
    before = W.load_weights(source + "/weights")[0]
    for bn in ("update", "source"):
        short = tiny_config(init=source, frozen_depth=2, **{"strategy.name": "gradual_unfreezing",
                                                            "strategy.bn": bn, "strategy.unfreeze_every_steps": 3,
                                                            "train.steps": 5, "train.restore_best": False})
        _run(short, tmp_path / bn)
        after = W.load_weights(tmp_path / bn / "weights")[0]
        for coll in ("params", "batch_stats"):
            for name, value in before[coll].items():
                unit = freezing.unit_of(name)
                if unit is None or (unit == 2 and name.endswith("bias")):
                    continue  # the head, and biases that may get no gradient in 2 steps
                same = np.array_equal(after[coll][name], value)
                moves = unit == 2 and (coll == "params" or bn == "update")
                assert same != moves, (bn, coll, name)


def _step_fixture(**kw):
    """One compiled train step of a 3-unit model with plain SGD (no momentum): updates are -lr * grad."""
    cfg = C.base_config()
    cfg.model.stage_sizes, cfg.model.width = (1, 1), 4
    cfg.optimizer.momentum = 0.0
    model = models.build(cfg.model, 5, 1)
    model.head.classifier.kernel.set_value(jax.random.normal(jax.random.key(3), model.head.classifier.kernel.shape))
    graphdef, pp, sp, params, stats = steps.split_model(model)
    mesh = setup.mesh()
    frozen_depth = kw.pop("frozen_depth", 0)
    labels = freezing.labels(list(params), frozen_depth)
    tx, train = steps.build_train(steps.TrainSpec(
        net=steps.Net(graphdef, pp, sp), frozen_depth=frozen_depth, labels=labels, optimizer=cfg.optimizer,
        objective=classification.Objective(5), value_range=(0.0, 1.0), mean=np.array([0.5], np.float32),
        std=np.array([0.5], np.float32), mesh=mesh, **kw))
    rng = np.random.default_rng(0)
    batch = steps.to_device({"image": rng.integers(0, 255, (8, 8, 8, 1), np.uint8),
                               "label": rng.integers(0, 5, 8).astype(np.int32)}, NamedSharding(mesh, P("data")))
    hp = {"lr": np.float32(1.0), "momentum": np.float32(0.0), "class_weights": np.ones(5, np.float32)}

    def step(anchor):
        state = {"params": jax.tree.map(jnp.copy, params), "batch_stats": jax.tree.map(jnp.copy, stats),
                 "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
                 "key": jax.random.key_data(jax.random.key(0))}
        new, _ = train(jax.device_put(state, NamedSharding(mesh, P())), batch, hp, anchor)
        return jax.device_get(new["params"])
    return params, step


def test_l2_sp_gradient_is_alpha_times_the_distance_to_the_start():
    alpha, beta = 0.5, 0.25
    w = {"units.1.conv.kernel": jnp.array([1.0, -2.0]), "head.classifier.kernel": jnp.array([3.0])}
    w0 = {"units.1.conv.kernel": jnp.array([0.5, 1.0])}
    g = jax.grad(strategies.l2_sp_penalty)(w, w0, alpha, beta)
    np.testing.assert_allclose(g["units.1.conv.kernel"], alpha * (w["units.1.conv.kernel"] - w0["units.1.conv.kernel"]))
    np.testing.assert_allclose(g["head.classifier.kernel"], beta * w["head.classifier.kernel"])

    # through the train step: with an anchor away from the weights, the update differs from the plain step
    # by exactly -lr * alpha * (w - w0) on trainable transferred weights, -lr * beta * w on the head, and
    # not at all on frozen units
    params, plain = _step_fixture(frozen_depth=1)
    _, sp = _step_fixture(frozen_depth=1, l2sp=(alpha, beta))
    rng = np.random.default_rng(1)
    anchor = {k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()
              if not k.startswith("head.")}
    a, b = plain({}), sp(anchor)
    for k, w_k in params.items():
        diff = b[k] - a[k]
        if freezing.unit_of(k) == 0:
            assert np.array_equal(b[k], w_k) and np.array_equal(a[k], w_k), k
        elif k.startswith("head."):
            np.testing.assert_allclose(diff, -beta * np.asarray(w_k), atol=1e-5, err_msg=k)
        else:
            np.testing.assert_allclose(diff, -alpha * (np.asarray(w_k) - anchor[k]), atol=1e-5, err_msg=k)


def test_discriminative_lrs_scale_each_units_update():
    c = C.base_config()
    c.strategy.lr_decay = 2.6
    mult = strategies.plan(c, num_units=3, frozen_depth=0, total_steps=10, steps_per_epoch=5).lr_multipliers
    params, plain = _step_fixture()
    _, disc = _step_fixture(lr_multipliers=mult)
    a, b = plain({}), disc({})
    for k, w_k in params.items():
        du, dd = np.asarray(a[k] - w_k), np.asarray(b[k] - w_k)
        if np.abs(du).max() > 1e-4:
            np.testing.assert_allclose(dd, mult[freezing.group_of(k)] * du, rtol=1e-3, atol=1e-6, err_msg=k)


def test_early_stopping_reports_the_test_metric_of_the_restored_best_step(tiny_config, tmp_path):
    cfg = tiny_config(**{"schedule.lr": 1.5, "train.early_stopping_patience": 2, "train.steps": 40,
                         "train.eval_every": 2, "train.eval_test": True, "train.early_stopping_metric": "val_loss"})
    r = _run(cfg, tmp_path / "es")
    rows = read_metrics(tmp_path / "es" / "metrics.jsonl")
    evals = {row["step"]: row for row in rows if "val_loss" in row and "event" not in row}
    best = min(evals, key=lambda s: evals[s]["val_loss"])
    assert r.metrics["best_step"] == best < r.metrics["steps"]
    assert r.metrics["test_accuracy"] == evals[best]["test_accuracy"]
    assert r.metrics["final_test_accuracy"] == evals[r.metrics["steps"]]["test_accuracy"]
    exported, meta = W.load_weights(tmp_path / "es" / "weights")
    restored, _ = W.load_weights(tmp_path / "es" / "best")
    for k, v in restored["params"].items():
        assert np.array_equal(exported["params"][k], v), k
