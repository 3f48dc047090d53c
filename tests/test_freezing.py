"""Frozen units are bitwise unchanged (parameters and BatchNorm statistics); the rest trains."""
import numpy as np
import pytest

from tl_research.finetune import freezing

from tl_research.run import trainer
from tl_research.checkpoints import weights as W


def _run(cfg, tmp_path, name):
    result = trainer.run(cfg, tmp_path / name, progress=False)
    assert result.status == "done", result.reason
    return result


@pytest.mark.parametrize("frozen_depth", [2])
def test_frozen_units_are_bitwise_unchanged_and_the_rest_moves(tiny_config, tmp_path, frozen_depth):
    source = tiny_config(**{"data.classes": (5, 6, 7, 8, 9), "train.steps": 6})
    _run(source, tmp_path, "source")
    before, _ = W.load_weights(tmp_path / "source" / "weights")
    cfg = tiny_config(init=str(tmp_path / "source"), frozen_depth=frozen_depth,
                      **{"optimizer.weight_decay": 0.01, "train.restore_best": False})
    _run(cfg, tmp_path, "target")
    after, _ = W.load_weights(tmp_path / "target" / "weights")
    for coll in ("params", "batch_stats"):
        for name, value in before[coll].items():
            unit = freezing.unit_of(name)
            if unit is not None and unit < frozen_depth:
                assert np.array_equal(after[coll][name], value), f"frozen {coll} {name} changed"
            elif unit is not None and not name.endswith(("bias",)):
                assert not np.array_equal(after[coll][name], value), f"trainable {coll} {name} did not move"
    # the head started from zero and learned
    assert np.abs(after["params"]["head.classifier.kernel"]).sum() > 0


def test_labels_and_trainable_count_follow_frozen_depth(tiny_config):
    names = ["units.0.conv.kernel", "units.0.bn.scale", "units.1.conv1.kernel", "head.classifier.kernel",
             "head.classifier.bias"]
    labels = freezing.labels(names, 1)
    assert labels["units.0.conv.kernel"] == labels["units.0.bn.scale"] == freezing.FROZEN
    assert labels["units.1.conv1.kernel"] == "unit_1"
    assert labels["head.classifier.bias"] == "head" + freezing.NO_DECAY
    probe = freezing.labels(names, 2)
    assert freezing.trainable(probe) == ["head.classifier.bias", "head.classifier.kernel"]


def test_weight_decay_takes_the_trainable_kernels_head_included_and_nothing_else():
    """optimizer.weight_decay decays every trainable kernel, the head's classifier (and hidden layers)
    included; never a bias, a normalisation parameter, a parameter a strategy adds under another name (LoRA's
    factors, prompts) or a frozen unit."""
    import jax.numpy as jnp
    import ml_collections
    params = {n: jnp.full((2,), 2.0) for n in (
        "units.0.conv.kernel", "units.1.conv.kernel", "units.1.conv.bias", "units.1.bn.scale",
        "units.1.attn.query.lora.lora_a", "units.1.prompts", "head.hidden_0.kernel", "head.classifier.kernel",
        "head.classifier.bias")}
    opt = ml_collections.ConfigDict(dict(name="sgd", momentum=0.0, nesterov=False, b1=0.9, b2=0.999, eps=1e-8,
                                         weight_decay=0.25, grad_clip=0.0))
    tx = freezing.build_optimizer(opt, freezing.labels(list(params), 1))
    state = tx.init(params)
    state.hyperparams["learning_rate"] = jnp.asarray(1.0)
    updates, _ = tx.update({n: jnp.zeros_like(v) for n, v in params.items()}, state, params)
    decayed = {n for n, u in updates.items() if np.any(np.asarray(u) != 0)}
    assert decayed == {"units.1.conv.kernel", "head.hidden_0.kernel", "head.classifier.kernel"}
    np.testing.assert_allclose(updates["head.classifier.kernel"], -0.25 * 2.0)  # -lr * wd * w, decoupled


def test_a_linear_probe_trains_only_the_head_and_costs_fewer_parameters(tiny_config, tmp_path):
    counts = {}
    for fd in (0, 1, "all"):
        r = _run(tiny_config(frozen_depth=fd, **{"train.steps": 2, "train.eval_every": 2}), tmp_path, str(fd))
        counts[fd] = r.metrics["trainable_params"]
        assert r.metrics["frozen_depth_resolved"] == {0: 0, 1: 1, "all": 3}[fd]
    assert counts[0] > counts[1] > counts["all"] == 8 * 5 + 5  # width 4 * 2 channels -> 5 classes


def test_frozen_prefix_gets_no_gradient():
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from tl_research import models
    m = models.build(models.default_config(), 3, 1)
    # a non-zero head, so that gradients reach the units at all
    m.head.classifier.kernel.set_value(jax.random.normal(jax.random.key(1), m.head.classifier.kernel.shape))
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))

    def loss(model, frozen_depth):
        return (model(x, train=True, frozen_depth=frozen_depth) ** 2).sum()
    grad = nnx.jit(nnx.grad(loss), static_argnums=1)  # one compilation instead of one per eager op
    frozen = grad(m, 2)
    full = grad(m, 0)
    assert float(jnp.abs(frozen.units[0].conv.kernel.get_value()).sum()) == 0.0
    assert float(jnp.abs(frozen.units[1].conv1.kernel.get_value()).sum()) == 0.0
    assert float(jnp.abs(frozen.units[2].conv1.kernel.get_value()).sum()) > 0.0
    assert float(jnp.abs(full.units[0].conv.kernel.get_value()).sum()) > 0.0


def test_adamw_is_not_a_second_name_for_adam():
    import ml_collections
    from tl_research import config as config_lib
    from tl_research.core.errors import ConfigError
    cfg = config_lib.base_config()
    cfg.optimizer.name = "adamw"
    with pytest.raises(ConfigError, match=r"optimizer\.name='adamw'.*allowed: sgd, adam$"):
        config_lib.validate(cfg)
    opt = ml_collections.ConfigDict(cfg.optimizer.to_dict())
    with pytest.raises(ConfigError, match=r"optimizer\.name='adamw' .*AdamW.*allowed: sgd, adam$"):
        freezing.build_optimizer(opt, {"head.classifier.kernel": "head"})
    opt.name, opt.weight_decay = "adam", 0.1  # AdamW: Adam's direction plus decoupled decay
    assert freezing.build_optimizer(opt, {"head.classifier.kernel": "head"}) is not None
