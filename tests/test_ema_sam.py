"""The optimisation recipes of issue 26 (tl_research.finetune.recipes): weight EMA (its update equals the
recurrence, it is what ema_select='ema' tests and exports, a killed run resumes it exactly) and SAM (its step
equals the hand-computed two-gradient update, frozen parameters untouched, its loss falls), and their config
checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tl_research import config as C
from tl_research import models
from tl_research.checkpoints import weights as W
from tl_research.core.errors import ConfigError
from tl_research.data import augment
from tl_research.finetune import freezing, recipes
from tl_research.run import loop, setup, steps, trainer
from tl_research.tasks.classification import task as classification


# ------------------------------------------------------------------------------------------------- pure pieces

def test_ema_decay_and_update_follow_timm():
    assert float(recipes.ema_decay(1, 0.99, False)) == np.float32(0.99)  # ModelEmaV2: the decay from update 1
    # ModelEmaV3's warmup: min(decay, 1 - t^(-2/3)); 0 at the first update (a copy), 0.75 at t = 8
    got = [float(recipes.ema_decay(t, 0.9, True)) for t in (1, 8, 1000)]
    np.testing.assert_allclose(got, [0.0, 0.75, 0.9], atol=1e-6)
    ema = {"params": {"a": jnp.array([1.0, 2.0]), "b": jnp.array([5.0])}, "batch_stats": {"m": jnp.array([0.5])}}
    params = {"a": jnp.array([3.0, 2.0]), "b": jnp.array([5.0]), "frozen": jnp.array([9.0])}
    new = recipes.ema_update(ema, params, {"m": jnp.array([1.5])}, 0.75)
    np.testing.assert_allclose(new["params"]["a"], [1.5, 2.0])  # 0.75 ema + 0.25 w
    np.testing.assert_allclose(new["batch_stats"]["m"], [0.75])
    assert set(new["params"]) == {"a", "b"}
    # where the weights equal the EMA (a parameter frozen in this phase) the EMA stays bitwise the same
    x = jnp.array([0.1, 1 / 3, 1e-7, 123.456], jnp.float32)
    same = recipes.ema_update({"params": {"x": x}, "batch_stats": {}}, {"x": x}, {}, 0.9999)
    np.testing.assert_array_equal(same["params"]["x"], x)


def test_sam_perturbation_is_rho_g_over_its_norm_and_asam_scales_by_the_weights():
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}
    w = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    eps = recipes.sam_perturbation(g, w, 0.1)
    np.testing.assert_allclose(eps["a"], [0.06, 0.0], rtol=1e-6)  # 0.1 * g / ||g||, ||g|| = 5
    np.testing.assert_allclose(eps["b"], [0.08], rtol=1e-6)
    adaptive = recipes.sam_perturbation(g, w, 0.1, adaptive=True)
    norm = np.sqrt(3.0 ** 2 + 2.0 ** 2)  # ||w g||
    np.testing.assert_allclose(adaptive["a"], [0.1 * 3.0 / norm, 0.0], rtol=1e-6)  # rho w^2 g / ||w g||
    np.testing.assert_allclose(adaptive["b"], [0.1 * 0.25 * 4.0 / norm], rtol=1e-6)


@pytest.mark.parametrize("key, value", [("train.ema_decay", 1.0), ("train.ema_decay", -0.1),
                                        ("train.ema_decay", True), ("train.ema_select", "best"),
                                        ("optimizer.sam_rho", -0.05), ("optimizer.sam_rho", float("nan"))])
def test_bad_ema_and_sam_settings_fail_in_one_line_naming_the_key(key, value):
    c = C.base_config()
    C.set_value(c, key, value)
    with pytest.raises(ConfigError, match=rf"config\.{key.replace('.', '[.]')}=") as e:
        recipes.check(c)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------- SAM's step

def test_the_sam_step_is_the_gradient_at_the_ascent_point_applied_at_w_and_frozen_params_stay():
    """Plain SGD at LR 1 (no momentum): a step is w - g(w), so the plain step itself gives the gradient at any
    weights; SAM's step must be w - g(w + rho g(w) / ||g(w)||), on the trainable parameters only."""
    cfg = C.base_config()
    cfg.model.stage_sizes, cfg.model.width = (1, 1), 4
    cfg.optimizer.momentum = 0.0
    model = models.build(cfg.model, 5, 1)
    model.head.classifier.kernel.set_value(jax.random.normal(jax.random.key(3), model.head.classifier.kernel.shape))
    graphdef, pp, sp, params, stats = steps.split_model(model)
    params, stats = jax.device_get((params, stats))  # numpy: no eager op compiles below
    mesh = setup.mesh()
    labels = freezing.labels(list(params), 1)  # unit 0 frozen
    rho = 0.5

    def build(sam):
        return steps.build_train(steps.TrainSpec(
            net=steps.Net(graphdef, pp, sp), frozen_depth=1, labels=labels, optimizer=cfg.optimizer,
            objective=classification.Objective(5), value_range=(0.0, 1.0), mean=np.float32([0.5]),
            std=np.float32([0.5]), mesh=mesh, sam=sam))

    rng = np.random.default_rng(0)
    batch = steps.to_device({"image": rng.integers(0, 255, (8, 8, 8, 1), np.uint8),
                             "label": rng.integers(0, 5, 8).astype(np.int32)}, NamedSharding(mesh, P("data")))

    def step(built, weights, lr=1.0):
        state = {"params": weights, "batch_stats": stats, "opt_state": opt_state, "step": np.int32(0),
                 "key": np.asarray(jax.random.key_data(jax.random.key(0)))}
        hp = {"lr": np.float32(lr), "momentum": np.float32(0.0), "class_weights": np.ones(5, np.float32)}
        new, m = built[1](jax.device_put(state, NamedSharding(mesh, P())), batch, hp, {})
        return jax.device_get(new["params"]), jax.device_get(new["batch_stats"]), float(m["loss"])

    plain, with_sam = build(None), build(recipes.Sam(rho))
    opt_state = jax.device_get(jax.jit(plain[0].init)(params))  # the same optimizer in both steps
    trainable = freezing.trainable(labels)
    after, plain_stats, plain_loss = step(plain, params)
    g = {k: params[k] - after[k] for k in trainable}  # g(w)
    norm = np.sqrt(sum(np.sum(np.square(v, dtype=np.float64)) for v in g.values()))
    ascent = {**params, **{k: params[k] + rho * g[k] / norm for k in trainable}}
    at_ascent = step(plain, ascent)[0]
    expected = {k: params[k] - (ascent[k] - at_ascent[k]) for k in trainable}  # w - g(w + eps)
    got, got_stats, got_loss = step(with_sam, params)
    moved = 0.0
    for k in params:
        if k in trainable:
            np.testing.assert_allclose(got[k], expected[k], atol=2e-5, err_msg=k)
            moved = max(moved, float(np.abs(got[k] - after[k]).max()))
        else:
            assert freezing.unit_of(k) == 0 and np.array_equal(got[k], params[k]), k  # never perturbed or moved
    assert moved > 1e-3  # the second gradient is not the first
    # the loss and the BatchNorm statistics are the first pass's, at w
    assert got_loss == plain_loss
    for k, v in plain_stats.items():
        np.testing.assert_array_equal(got_stats[k], v, err_msg=k)
    # and SAM trains: its loss (at w) falls step after step on the batch
    losses, w = [], params
    for _ in range(6):
        w, _, loss = step(with_sam, w, lr=0.2)
        losses.append(loss)
    assert np.all(np.diff(losses) < 0) and losses[-1] < losses[0] - 0.1, losses


# ------------------------------------------------------------------------------------------------- in a run

def test_a_run_s_ema_is_the_recurrence_of_its_raw_weights_is_what_it_exports_and_resumes_exactly(
        tiny_config, tmp_path, monkeypatch):
    """One run, unit 0 frozen, the EMA's decay warming up, ema_select='ema': after every step the
    state's EMA equals the recurrence computed from the recorded raw weights (over the parameters that train,
    unit 0's not averaged, and every BatchNorm statistic); the run tests and exports the last EMA weights; a
    run killed midway resumes to the same weights and metrics. Its objective has the run's normalisation."""
    cfg = tiny_config(frozen_depth=1, **{"train.ema_decay": 0.8, "train.ema_warmup": True, "train.ema_select": "ema",
                                         "train.steps": 6, "train.eval_every": 3,
                                         "train.checkpoint_every": 3, "train.restore_best": False})
    states, take_step = [], loop.Training._step

    def spy(self, step, *args):  # the state after each step of the uninterrupted run
        out = take_step(self, step, *args)
        if self.run_dir.name == "whole":
            states.append(jax.device_get({k: self.state[k] for k in ("params", "batch_stats", "ema")}))
            base = self.prog.base  # and the objective has the run's normalisation (randaugment's pixel space)
            assert self.prog.objective.pixels == augment.pixel_values(base.value_range, base.mean, base.std)
        return out

    monkeypatch.setattr(loop.Training, "_step", spy)
    cache = steps.StepCache()
    whole = trainer.run(cfg, tmp_path / "whole", progress=False, cache=cache)
    assert whole.status == "done", whole.reason
    exported = W.load_weights(tmp_path / "whole" / "weights")[0]
    names = {k for k in states[0]["ema"]["params"]}
    assert names == {k for k in exported["params"] if freezing.unit_of(k) != 0}  # what trains
    ema = None
    for t, state in enumerate(states, start=1):
        if ema is None:  # t = 1: decay 0 under the warmup, the EMA becomes the weights
            ema = {c: {k: np.float64(state[c][k]) for k in state["ema"][c]} for c in ("params", "batch_stats")}
        d = min(0.8, 1 - t ** (-2 / 3))
        ema = {c: {k: e + (1 - d) * (state[c][k] - e) for k, e in ema[c].items()} for c in ema}
        for c in ema:
            for k, e in ema[c].items():
                np.testing.assert_allclose(state["ema"][c][k], e, rtol=1e-5, atol=1e-6, err_msg=f"step {t}: {k}")
    last = states[-1]
    assert any(not np.allclose(v, last["params"][k]) for k, v in last["ema"]["params"].items())
    for k, v in exported["params"].items():  # the EMA weights; unit 0 (frozen, not averaged) the raw ones
        np.testing.assert_array_equal(v, last["ema"]["params"].get(k, last["params"][k]), err_msg=k)
    for k, v in exported["batch_stats"].items():
        np.testing.assert_array_equal(v, last["ema"]["batch_stats"][k], err_msg=k)
    m = whole.metrics
    assert m["test_accuracy"] == m["ema_test_accuracy"] and m["val_accuracy"] == m["ema_val_accuracy"]
    assert {"raw_val_accuracy", "raw_test_accuracy"} <= set(m)
    rows = (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert rows.count('"ema_val_loss"') == 2 and rows.count('"val_loss"') == 2  # both kinds at each eval

    part = trainer.run(cfg, tmp_path / "resumed", progress=False, cache=cache, stop_at_step=4)
    assert part.status == "interrupted"
    resumed = trainer.run(cfg, tmp_path / "resumed", progress=False, cache=cache)
    strip = lambda d: {k: v for k, v in d.items() if k != "wall_time"}
    assert strip(resumed.metrics) == strip(m)
    again = W.load_weights(tmp_path / "resumed" / "weights")[0]
    for c in exported:
        for k, v in exported[c].items():
            np.testing.assert_array_equal(again[c][k], v, err_msg=k)
