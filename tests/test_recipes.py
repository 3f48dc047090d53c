"""The recipe flags of issue 26: CutMix (and its switching with mixup), RandAugment on the device
(data/augment.py) and drop-path / stochastic depth (models.base.DropPathBlock, `model.drop_path`)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from tl_research import models
from tl_research.core.errors import ConfigError
from tl_research.models import base


# ------------------------------------------------------------------------------------------------- drop-path

def _model(name="resnet_cifar", **kw):
    cfg = models.default_config()
    cfg.name = name
    cfg.update(kw)
    return models.build(cfg, 5, 3, seed=0)


def _images(shape=(8, 16, 16, 3)):
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def _run(model, x, key=jax.random.key(1), train=True):
    graphdef, state = nnx.split(model)
    return np.asarray(jax.jit(lambda s, x, k: nnx.merge(graphdef, s)(x, train=train, dropout_key=k))(state, x, key))


def _with_trained_head(model):
    # the classifier starts at zero (every logit 0 whatever the features): give it weights, so that logits
    # show what the units computed
    k = model.head.classifier.kernel
    k.set_value(jnp.asarray(np.random.default_rng(1).normal(size=k.shape), jnp.float32))
    return model


def test_drop_path_rates_decay_linearly_from_zero_to_the_rate():
    cfg = ml_collections.ConfigDict(dict(drop_path=0.3))
    np.testing.assert_allclose(base.drop_path_rates(cfg, 4), [0.0, 0.1, 0.2, 0.3])
    vit = models.abstract(ml_collections.ConfigDict(dict(models.default_config(), name="vit_ti16",
                                                         drop_path=0.11)), 5, 3)
    rates = [u.drop_path_rate for u in vit.units if isinstance(u, base.DropPathBlock)]
    np.testing.assert_allclose(rates, np.linspace(0.0, 0.11, 12), rtol=1e-6)
    cifar = models.abstract(ml_collections.ConfigDict(dict(models.default_config(), stage_sizes=(2, 1, 2),
                                                           drop_path=0.2)), 5, 3)
    np.testing.assert_allclose([u.drop_path_rate for u in cifar.units[1:]], [0.0, 0.05, 0.1, 0.15, 0.2])
    resnet = models.abstract(ml_collections.ConfigDict(dict(models.default_config(), name="resnet50",
                                                            drop_path=0.15)), 5, 3)
    np.testing.assert_allclose([u.drop_path_rate for u in resnet.units[1:]], np.linspace(0.0, 0.15, 16), rtol=1e-6)


@pytest.mark.parametrize("name", ["resnet_cifar", "vit_ti16"])
def test_drop_path_at_zero_is_bit_identical_and_inactive_in_eval(name):
    size = 32 if name.startswith("vit") else 16
    kw = dict(image_size=32) if name.startswith("vit") else dict(stage_sizes=(2, 2, 2))
    x = _images((8, size, size, 3))
    plain = _with_trained_head(_model(name, **kw))  # the config without drop-path's key's effect
    graphdef, state = nnx.split(plain)
    off = _with_trained_head(_model(name, drop_path=0.0, **kw))
    on = _with_trained_head(_model(name, drop_path=0.5, **kw))
    # the same parameters (drop-path draws none)
    for m in (off, on):
        for a, b in zip(jax.tree.leaves(nnx.state(m, nnx.Param)), jax.tree.leaves(nnx.state(plain, nnx.Param))):
            np.testing.assert_array_equal(a, b)
    for train in (False, True):
        np.testing.assert_array_equal(_run(off, x, train=train), _run(plain, x, train=train))
    # in inference mode a model with drop-path computes exactly what it computes without
    np.testing.assert_array_equal(_run(on, x, train=False), _run(plain, x, train=False))
    # in training some branches are dropped: the output differs from eval mode's and from rate 0's training
    # output, depends on the key, and is the same for the same key
    a, b = _run(on, x, jax.random.key(1)), _run(on, x, jax.random.key(2))
    assert not np.allclose(a, _run(plain, x, jax.random.key(1)))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, _run(on, x, jax.random.key(1)))


def test_drop_path_drops_whole_examples_at_its_rate_and_keeps_the_mean():
    y = jnp.ones((20000, 3, 2), jnp.float32)
    out = np.asarray(base.drop_path(y, 0.25, jax.random.key(0)))
    kept = out[:, 0, 0] > 0
    assert np.all(out[kept] == pytest.approx(1 / 0.75)) and np.all(out[~kept] == 0)  # per example, whole
    assert abs(kept.mean() - 0.75) < 0.01 and abs(out.mean() - 1.0) < 0.02


def test_drop_path_is_refused_outside_the_families_that_have_it_and_outside_zero_to_one():
    cfg = models.default_config()
    cfg.name, cfg.drop_path = "vgg16", 0.1
    with pytest.raises(ConfigError, match="config.model.drop_path=0.1"):
        models.abstract(cfg, 5, 3)
    cfg.name, cfg.drop_path = "resnet_cifar", 1.0
    with pytest.raises(ConfigError, match="config.model.drop_path=1.0"):
        models.abstract(cfg, 5, 3)
    cfg.name, cfg.drop_path = "vgg16", 0.0
    models.abstract(cfg, 5, 3)  # 0 is every family's
