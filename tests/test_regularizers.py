"""The transfer literature's regularisers (strategy.regularizer = delta | bss | stochnorm | co_tuning): each loss
term against its formula on a hand-made case, StochNorm's branches, the refusals, the train step of each
(finite loss, falling on a repeated batch) and a Co-Tuning run resumed equal to the uninterrupted one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tl_research import models
from tl_research.checkpoints import weights as W
from tl_research.core.errors import ConfigError
from tl_research.core.tracking import read_metrics
from tl_research.finetune import regularizers, strategies
from tl_research.finetune.regularizers import bss, co_tuning, delta
from tl_research.models import norm
from tl_research.models.base import ModelMeta
from tl_research.run import setup, steps, trainer


class _Net:
    """A stand-in for a model: fixed unit outputs, classifier input and logits (what the terms read)."""

    def __init__(self, outs=(), features=None, logits=None, source_classifier=None):
        self.outs, self.z, self.logits = list(outs), features, logits
        self.head = type("Head", (), {"source_classifier": staticmethod(source_classifier or (lambda z: z))})

    def outputs(self, images, start=0, **call):
        return self.logits, self.outs[start:], self.z

    def features(self, images, *, start=0, return_units=False, **call):
        return None, self.outs[start:]


def _pass(**kw):
    return regularizers.Pass(**{"train_params": {}, "params": {}, "stats": {}, "anchor": {}, "model_of": None, **kw})


# ---------------------------------------------------------------------------------------------- the terms

def test_bss_is_eta_times_the_k_smallest_squared_singular_values():
    rng = np.random.default_rng(0)
    for shape in ((6, 4), (3, 5)):  # more examples than features, and fewer
        f = rng.normal(size=shape).astype(np.float32)
        s = np.sort(np.linalg.svd(f.astype(np.float64), compute_uv=False))
        for k in (1, 2):
            np.testing.assert_allclose(bss.bss_penalty(jnp.asarray(f), k), np.sum(s[:k] ** 2), rtol=1e-4)
    _, penalty, metrics = bss.BSS(eta=0.5, k=2).apply(_Net(features=jnp.asarray(f)), None, {}, {}, _pass())
    np.testing.assert_allclose(penalty, 0.5 * np.sum(s[:2] ** 2), rtol=1e-4)
    assert metrics == {"reg_bss": penalty}


def test_delta_is_the_attention_weighted_feature_map_distance_plus_l2_on_the_head():
    rng = np.random.default_rng(1)
    shapes = [(2, 4, 4, 2), (2, 4, 4, 3), (2, 2, 2, 3), (2, 5)]  # unit 2 downsamples unit 1, unit 3 pools
    assert delta.select_units(shapes) == [1, 2, 3]  # before each downsampling, and the last
    assert delta.select_units(shapes[2:], offset=2) == [2, 3]  # on cached activations from unit 2
    assert delta.select_units(shapes, (3, 0)) == [0, 3] and delta.select_units(shapes[1:], (0, 3), 1) == [3]
    target = [rng.normal(size=s).astype(np.float32) for s in shapes]
    source = [rng.normal(size=s).astype(np.float32) for s in shapes]
    attention = {"1": np.array([0.5, 1.0, 1.5], np.float32), "3": rng.uniform(size=5).astype(np.float32)}

    def explicit(u):  # mean over examples of sum_c w_c * mean over positions of the squared difference
        t, s = target[u], source[u]
        w = attention.get(str(u), np.ones(t.shape[-1]))
        return np.mean([sum(w[c] * np.mean((t[b, ..., c] - s[b, ..., c]) ** 2) for c in range(t.shape[-1]))
                        for b in range(t.shape[0])])

    head = {"head.classifier.kernel": rng.normal(size=(5, 3)).astype(np.float32)}
    ctx = _pass(train_params={**head, "units.3.kernel": np.ones(4, np.float32)},
                anchor={"params": {}, "batch_stats": {}, "attention": attention},
                model_of=lambda params, stats: _Net(source))
    term, l2 = delta.Delta(alpha=0.4, beta=0.2), np.sum(head["head.classifier.kernel"] ** 2)
    for start, units in ((0, (1, 2, 3)), (2, (2, 3))):
        _, penalty, metrics = term.apply(_Net(target), None, {}, {"start": start} if start else {}, ctx)
        dist = sum(explicit(u) for u in units)
        np.testing.assert_allclose(metrics["reg_delta"], 0.2 * dist, rtol=1e-5)
        np.testing.assert_allclose(penalty, 0.2 * dist + 0.1 * l2, rtol=1e-5)
    # the attention: C * softmax(z / 5) of the standardised loss rises (mean 1); equal rises weigh 1 each
    rise = np.array([0.1, 0.3, 0.8])
    z = (rise - rise.mean()) / rise.std()
    np.testing.assert_allclose(delta.attention_weights(rise), 3 * np.exp(z / 5) / np.exp(z / 5).sum(), rtol=1e-6)
    np.testing.assert_array_equal(delta.attention_weights(np.full(4, 0.2)), np.ones(4))


def test_co_tuning_relationship_and_loss_on_a_hand_made_case():
    # source softmax sums per target class (3 target classes, 2 source ones), class 1 without an example
    rel = co_tuning.relationship(np.array([[0.8, 1.2], [0.0, 0.0], [0.9, 0.1]]), np.array([2, 0, 1]))
    np.testing.assert_allclose(rel, [[0.4, 0.6], [0.5, 0.5], [0.9, 0.1]], rtol=1e-6)
    # a source head giving softmax (0.25, 0.75) to the example of target class 0: CE against (0.4, 0.6)
    z = jnp.array([[0.0, np.log(3.0)]], jnp.float32)
    soft = jnp.array([[1.0, 0.0, 0.0]], jnp.float32)
    _, penalty, metrics = co_tuning.CoTuning(lam=2.0).apply(
        _Net(features=z), None, {"soft": soft}, {}, _pass(anchor={"relationship": rel}))
    expected = -(0.4 * np.log(0.25) + 0.6 * np.log(0.75))
    np.testing.assert_allclose(penalty, 2.0 * expected, rtol=1e-5)
    np.testing.assert_allclose(co_tuning.co_tuning_loss(z, jnp.asarray(rel[:1])), expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- StochNorm

def test_stochnorm_draws_batch_or_moving_statistics_per_channel():
    bn = nnx.BatchNorm(8, rngs=nnx.Rngs(0))
    bn.mean.set_value(jnp.linspace(-1.0, 1.0, 8))
    bn.var.set_value(jnp.linspace(0.5, 2.0, 8))
    graphdef, state = nnx.split(bn)
    probabilities = (1.0, 0.0, 0.5)

    @jax.jit
    def outputs(state, x, key):  # one compilation for every case
        fresh = lambda: nnx.merge(graphdef, jax.tree.map(jnp.copy, state))  # a layer of its own (merge shares)
        plain = fresh()
        out = {"batch": plain(x, use_running_average=False),  # BatchNorm in training: the batch's statistics
               "moving": fresh()(x, use_running_average=True),  # the statistics before it
               "stats": (plain.mean.get_value(), plain.var.get_value()),
               "inference": plain(x, use_running_average=True)}  # on the updated statistics
        for p in probabilities:
            layer = fresh()
            out[f"count {p}"] = norm.to_stochnorm([layer], p)
            norm.seed_stochnorm(layer, key, 3)  # as call_unit does for unit 3
            out[f"train {p}"] = layer(x, use_running_average=False)
            out[f"stats {p}"] = (layer.mean.get_value(), layer.var.get_value())
            out[f"inference {p}"] = layer(x, use_running_average=True)
        out["draw"] = jax.random.uniform(jax.random.fold_in(key, norm.STOCH_STREAM + 3), (8,))  # unit 3's draw
        return out

    x = np.random.default_rng(0).normal(1.0, 2.0, (6, 3, 3, 8)).astype(np.float32)
    out = jax.device_get(outputs(state, x, jax.random.key(7)))
    assert not np.allclose(out["batch"], out["moving"])
    draw = out["draw"]
    for p, takes_batch in zip(probabilities, (np.ones(8, bool), np.zeros(8, bool), draw < 0.5)):
        assert out[f"count {p}"] == 1
        np.testing.assert_array_equal(out[f"train {p}"], np.where(takes_batch, out["batch"], out["moving"]))
        # the running statistics are updated as BatchNorm's, whichever branch each channel took
        np.testing.assert_array_equal(out[f"stats {p}"], out["stats"])
        np.testing.assert_array_equal(out[f"inference {p}"], out["inference"])  # inference: plain BatchNorm
    assert 0 < takes_batch.sum() < 8  # both branches drawn at p = 0.5: the check tells them apart


# ---------------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("overrides, key", [
    ({"strategy.regularizer": "delta"}, "strategy.regularizer"),  # init is scratch: no source network
    ({"strategy.regularizer": "co_tuning"}, "strategy.regularizer"),  # nor a source classifier
    ({"strategy.regularizer": "bss", "task": "segmentation"}, "strategy.regularizer"),
    ({"strategy.regularizer": "stochnorm", "strategy.bn": "source"}, "strategy.regularizer"),
    ({"strategy.regularizer": "stochnorm", "model.name": "vit_micro", "model.image_size": 8},
     "strategy.regularizer"),  # no BatchNorm
    ({"strategy.regularizer": "co_tuning", "init": "/w", "model.head": "mlp"}, "strategy.regularizer"),
    ({"strategy.regularizer": "delta", "init": "/w", "strategy.delta_units": (5,)}, "strategy.delta_units"),
    ({"strategy.stochnorm_p": 1.5}, "strategy.stochnorm_p"),
    ({"strategy.bss_k": 0}, "strategy.bss_k"),
    ({"strategy.regularizer": "bss", "strategy.bss_k": 40}, "strategy.bss_k"),  # a batch of 32
    ({"strategy.regularizer": "ewc"}, "strategy.regularizer"),
])
def test_bad_regularizer_settings_are_refused_in_one_line(tiny_config, overrides, key):
    with pytest.raises(ConfigError) as e:
        strategies.check(tiny_config(**overrides))
    assert e.value.key == key and "\n" not in str(e.value)


def test_co_tuning_needs_the_source_classifier_the_head_input_fits(tiny_config):
    cfg = tiny_config(**{"init": "/w", "strategy.regularizer": "co_tuning"})
    model = models.abstract(cfg.model, 5, 1)
    for weights, why in (({"params": {}}, "no classifier"),
                         ({"params": {"head.classifier.kernel": np.zeros((3, 7))}}, "reads 3 features")):
        with pytest.raises(ConfigError, match=why) as e:
            co_tuning.check_weights(cfg, weights)
        assert e.value.key == "strategy.regularizer"
        with pytest.raises(ConfigError, match=why):
            regularizers.extend(model, cfg, weights)


# ---------------------------------------------------------------------------------------------- steps and runs

@pytest.fixture(scope="module")
def source(data_dir, tmp_path_factory):
    """Starting weights with a 7-class source classifier, random (so its predictions differ per example), made
    without training or compiling anything."""
    from conftest import tiny
    rng = np.random.default_rng(0)
    model = models.abstract(tiny(data_dir).model, 7, 1)
    weights = {"params": {}, "batch_stats": {}}
    for coll, kind in W.COLLECTIONS.items():
        for path, v in nnx.to_flat_state(nnx.state(model, kind)):
            name = ".".join(map(str, path))
            value = (np.ones if name.endswith(("scale", "var")) else np.zeros)(v.shape, np.float32)
            if name.endswith("kernel"):
                value = rng.normal(0.0, 0.5, v.shape).astype(np.float32)
            weights[coll][name] = value
    d = tmp_path_factory.mktemp("regularizer_source") / "weights"
    W.save_weights(d, weights, ModelMeta(num_classes=7))
    return str(d)


@pytest.mark.parametrize("name", ["bss", "stochnorm", "delta"])
def test_each_regularizers_step_trains_with_its_term(tiny_config, source, name):
    """The run's own program and train step (units 0 and 1 frozen) on one repeated batch: the loss finite and
    falling, the term logged and finite; DELTA's attention computed before training, for the trainable unit."""
    cfg = tiny_config(init=source, frozen_depth=2, **{"strategy.regularizer": name})
    s = setup.setup(cfg)
    prog = steps.Program(s, cfg, setup.mesh(cfg), steps.StepCache())
    step = prog.steps(s.plan.phases[0])
    state = prog.fresh_state(step.tx)
    split = s.data.train
    batch = steps.to_device({"image": split.images[:32], "label": split.labels[:32].astype(np.int32)},
                            prog.placement.batch)
    hp = {"lr": np.float32(0.1), "momentum": np.float32(0.9), "class_weights": s.class_weights}
    losses = []
    for _ in range(6):
        state, m = step.train(state, batch, hp, prog.anchor)
        losses.append(float(m["loss"]))
        if name != "stochnorm":
            assert np.isfinite(float(m[f"reg_{name}"])) and float(m[f"reg_{name}"]) > 0
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.03, losses
    if name == "stochnorm":  # every BatchNorm of the units turned, under the same paths
        plain = models.abstract(cfg.model, 5, 1)
        count = lambda model, kind: sum(type(m) is kind for u in model.units for _, m in nnx.iter_modules(u))
        assert count(s.model, norm.StochNorm) == count(plain, nnx.BatchNorm) == 6 and count(s.model, nnx.BatchNorm) == 0
        assert set(state["params"]) == {".".join(map(str, q)) for q, _ in nnx.to_flat_state(nnx.state(plain, nnx.Param))}
    if name == "delta":  # the attention of the units that train (the last: the one unit DELTA compares there)
        attention = jax.device_get(prog.anchor["attention"])
        assert list(attention) == ["2"] and attention["2"].shape == (8,)
        assert abs(float(attention["2"].mean()) - 1) < 1e-5 and attention["2"].std() > 0


def test_a_co_tuning_run_resumes_to_the_uninterrupted_result(tiny_config, source, tmp_path):
    cfg = tiny_config(init=source, **{"strategy.regularizer": "co_tuning", "train.steps": 4, "train.eval_every": 2,
                                      "train.checkpoint_every": 2, "train.log_every": 1, "train.restore_best": False})
    cache = steps.StepCache()
    whole = trainer.run(cfg, tmp_path / "whole", progress=False, cache=cache)
    assert whole.status == "done", whole.reason
    assert whole.metrics["strategy_resolved"] == "fine_tune, no weight decay, co_tuning 2.3"
    rows = [r for r in read_metrics(tmp_path / "whole" / "metrics.jsonl") if "train_loss" in r]
    assert all(np.isfinite(r["train_loss"]) and r["train_reg_co_tuning"] > 0 for r in rows)
    part = trainer.run(cfg, tmp_path / "resumed", progress=False, cache=cache, stop_at_step=2)
    assert part.status == "interrupted"
    resumed = trainer.run(cfg, tmp_path / "resumed", progress=False, cache=cache)
    a, b = (W.load_weights(tmp_path / d / "weights")[0]["params"] for d in ("whole", "resumed"))
    assert "head.source_classifier.kernel" in a and set(a) == set(b)
    for k in a:  # the source head trained beside the new one, restored with the rest
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    source_kernel = W.load_weights(source)[0]["params"]["head.classifier.kernel"]
    assert not np.array_equal(a["head.source_classifier.kernel"], source_kernel)
    assert resumed.metrics["test_loss"] == whole.metrics["test_loss"]
