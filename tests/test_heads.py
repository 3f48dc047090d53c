"""The heads put on top of the depth units: model.head linear | mlp, model.pool avg | max | flatten,
model.dropout; the head is what frozen_depth=all trains and what starts fresh on transfer."""
from __future__ import annotations

import numpy as np
import pytest

from tl_research import config as C
from tl_research.finetune import freezing
from tl_research import models
from tl_research.run import trainer
from tl_research.checkpoints.weights import flat_state, load_weights, save_weights, transfer
from tl_research.core.errors import ConfigError


def _cfg(**kw):
    cfg = models.default_config()
    cfg.stage_sizes, cfg.width = (1, 1), 4
    cfg.update(kw)
    return cfg


def test_the_classic_flatten_dense_relu_head_computes_what_it_says():
    model = models.build(_cfg(head="mlp", head_hidden=(16,), pool="flatten", flatten_grid=2), 3, 1, seed=1)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 1)).astype(np.float32)
    feats = np.asarray(model.features(x))  # (2, 4, 4, 8): 8x8 input, two stages
    assert feats.shape == (2, 4, 4, 8)
    hidden, cls = model.head.hidden[0], model.head.classifier
    assert hidden.kernel.shape == (2 * 2 * 8, 16) and cls.kernel.shape == (16, 3)
    cls.kernel.set_value(np.random.default_rng(1).standard_normal((16, 3)).astype(np.float32))
    pooled = feats.reshape(2, 2, 2, 2, 2, 8).mean(axis=(2, 4))  # 4x4 -> 2x2 (adaptive = 2x2 blocks)
    flat = pooled.reshape(2, -1)  # (height, width, channel) order, as Keras' Flatten
    h = np.maximum(flat @ np.asarray(hidden.kernel) + np.asarray(hidden.bias), 0.0)
    expected = h @ np.asarray(cls.kernel) + np.asarray(cls.bias)
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5, atol=1e-5)
    # max pooling takes the maximum over positions, the default the mean
    maxed = models.build(_cfg(pool="max"), 3, 1, seed=1)
    assert maxed.head.pool == "max" and models.build(_cfg(), 3, 1).head.pool == "avg"


def test_frozen_depth_all_trains_the_whole_head_and_transfer_starts_it_fresh(tmp_path):
    cfg = _cfg(head="mlp", head_hidden=(32, 16))
    model = models.zeros(cfg, 5, 1)
    names = list(flat_state(model)["params"])
    head = [n for n in names if n.startswith("head.")]
    assert len(head) == 6  # two hidden layers and the classifier, kernel and bias each
    labels = freezing.labels(names, model.num_units)
    assert {labels[n].split("/")[0] for n in head} == {"head"}
    assert all(labels[n] == freezing.FROZEN for n in names if not n.startswith("head."))
    # a checkpoint with a linear head (e.g. a converted one) loads into the mlp model, head re-initialised
    source = models.build(_cfg(), 10, 1, seed=3)
    report = transfer(model, flat_state(source))
    assert sorted(report.head_reinitialised) == sorted(head)
    assert np.std(np.asarray(model.head.hidden[0].kernel)) > 0.1  # random, not zero: gradients reach it
    assert not np.any(np.asarray(model.head.classifier.kernel))


def test_an_mlp_head_on_a_checkpoint_trains_at_frozen_depth_all(tiny_config, tmp_path):
    source_cfg = tiny_config().model
    save_weights(tmp_path / "src", models.build(source_cfg, 5, 1, seed=3), models.ModelMeta())
    cfg = tiny_config(**{"init": str(tmp_path / "src"), "frozen_depth": "all", "model.head": "mlp",
                         "model.head_hidden": (16,), "model.pool": "flatten", "model.flatten_grid": 2,
                         "model.dropout": 0.5, "train.steps": 6})
    C.validate(cfg)
    result = trainer.run(cfg, tmp_path / "run", progress=False)
    assert result.status == "done", result.reason
    trained, _ = load_weights(tmp_path / "run" / "weights")
    source, _ = load_weights(tmp_path / "src")
    start = flat_state(models.zeros(cfg.model, 5, 1))["params"]
    for k, v in source["params"].items():
        if not k.startswith("head."):
            np.testing.assert_array_equal(trained["params"][k], v)  # the units stayed frozen
    for k in ("head.hidden.0.kernel", "head.classifier.kernel"):
        assert not np.allclose(trained["params"][k], start[k]), k  # both head layers trained


@pytest.mark.parametrize("key, value, allowed", [
    ("model.head", "deep", "linear, mlp"),
    ("model.pool", "mean", "avg, max, flatten"),
    ("model.head_hidden", (), "positive widths"),
    ("model.dropout", 1.0, r"\[0, 1\)"),
])
def test_bad_head_settings_are_refused_before_any_work(tiny_config, key, value, allowed):
    cfg = tiny_config(**{"model.head": "mlp", key: value})
    with pytest.raises(ConfigError, match=f"config.{key}=.*allowed: .*{allowed}"):
        C.validate(cfg)


def test_a_token_model_pools_its_tokens_but_has_no_map_to_flatten():
    from flax import nnx

    from tl_research.models.base import make_head
    cfg = models.default_config()  # the arguments vit.build passes
    vit = dict(rngs=nnx.Rngs(0), default_pool="token", pools=("avg", "max"))
    assert make_head(cfg, 8, 3, **vit).pool == "token"
    cfg.pool = "max"
    assert make_head(cfg, 8, 3, **vit).pool == "max"
    cfg.pool = "flatten"
    with pytest.raises(ConfigError, match="config.model.pool='flatten'.*allowed: , token, avg, max"):
        make_head(cfg, 8, 3, **vit)
