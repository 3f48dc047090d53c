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
    cfg = models.default_config().to_dict()
    cfg.pop("drop_path")  # a config from before the key: the builders' default
    cfg.update(name=name, **kw)
    return models.build(ml_collections.ConfigDict(cfg), 5, 3, seed=0)


def _images(shape=(8, 16, 16, 3)):
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


_STEPS = {}  # one compiled forward per (model, mode): a ViT's recompiled at every call dominates these tests


def _run(model, x, key=jax.random.key(1), train=True):
    graphdef, state = nnx.split(model)
    step = _STEPS.get((id(model), train))
    if step is None:
        step = _STEPS[id(model), train] = (model, jax.jit(
            lambda s, x, k: nnx.merge(graphdef, s)(x, train=train, dropout_key=k)))
    return np.asarray(step[1](state, x, key))


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


@pytest.mark.parametrize("name", ["resnet_cifar", "vit_micro"])  # vit_micro: the ViT family's EncoderBlock
def test_drop_path_at_zero_is_bit_identical_and_inactive_in_eval(name):
    size = 8 if name.startswith("vit") else 16
    kw = dict(image_size=8) if name.startswith("vit") else dict(stage_sizes=(2, 2, 2))
    x = _images((8, size, size, 3))
    plain = _with_trained_head(_model(name, **kw))  # without model.drop_path
    off = _with_trained_head(_model(name, drop_path=0.0, **kw))
    on = _with_trained_head(_model(name, drop_path=0.5, **kw))
    # the same parameters (drop-path draws none)
    for m in (off, on):
        for a, b in zip(jax.tree.leaves(nnx.state(m, nnx.Param)), jax.tree.leaves(nnx.state(plain, nnx.Param))):
            np.testing.assert_array_equal(a, b)
    # at rate 0 no block drops anything: the model trains without a key (a block that drew would need one,
    # models.base.DropPathBlock.branch) and computes the same bits with one
    assert all(getattr(u, "drop_path_rate", 0.0) == 0.0 for u in off.units)
    for train in (False, True):
        np.testing.assert_array_equal(_run(off, x, key=None, train=train), _run(off, x, train=train))
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


# ------------------------------------------------------------------------------------------------ CutMix

from tl_research.data import augment  # noqa: E402

KEY = jax.random.key(0)
_run_augment = jax.jit(augment.apply, static_argnums=0)


def _constant_batch(b=8, h=12, w=20):
    """Image i is the constant i + 1 (so every output pixel says which example it came from), class i."""
    images = np.broadcast_to(np.arange(1, b + 1, dtype=np.float32)[:, None, None, None], (b, h, w, 3)).copy()
    return images, np.eye(b, dtype=np.float32)


def test_cutmix_pastes_one_box_and_mixes_targets_by_its_actual_area():
    images, targets = _constant_batch()
    b, h, w = images.shape[:3]
    seen_partial = 0
    for seed in range(12):
        out, t = (np.asarray(a) for a in _run_augment(("cutmix(1.0)",), images, targets, jax.random.key(seed)))
        np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
        pasted = out[..., 0] != images[..., 0]  # (B, H, W): pixels that came from another example
        boxes = {pasted[i].tobytes() for i in range(b) if pasted[i].any()}
        assert len(boxes) <= 1  # one box for the whole batch
        for i in range(b):
            frac = pasted[i].mean()
            if frac == 0:
                continue
            rows, cols = np.nonzero(pasted[i])
            assert pasted[i, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
            source = int(out[i, rows[0], cols[0], 0]) - 1  # the permuted example it came from
            assert np.all(out[i][pasted[i]] == source + 1)
            np.testing.assert_allclose(t[i, i], 1 - frac, atol=1e-6)  # own target: the unpasted area
            np.testing.assert_allclose(t[i, source], frac, atol=1e-6)  # the source's: the pasted area
            seen_partial += 0 < frac < 1
    assert seen_partial > 20


def _uses_cutmix(ops, keys, b=8, side=32):
    """For each key, whether apply(ops) took the cutmix branch (an image holding two examples' values; mixup
    leaves every image constant)."""
    images, targets = _constant_batch(b, side, side)
    out = jax.jit(jax.vmap(lambda k: augment.apply(ops, images, targets, k)[0]))(keys)
    out = np.asarray(out)[..., 0].reshape(len(keys), b, -1)
    return (out.max(-1) != out.min(-1)).any(-1)


@pytest.mark.parametrize("ops", [("mixup(0.2)", "cutmix(1.0, switch=0.3)"), ("cutmix(alpha=1, switch=0.3)",
                                                                            "mixup(alpha=0.2)")])
def test_mixup_and_cutmix_next_to_each_other_switch_per_batch_at_the_switch_rate(ops):
    keys = jax.random.split(jax.random.key(3), 1000)
    rate = _uses_cutmix(ops, keys).mean()
    # 0.3 of the batches (an empty box, about 0.4% at 32 px, reads as mixup); std of the mean about 0.015
    assert abs(rate - 0.3) < 0.05, rate
    never = _uses_cutmix(("mixup(0.2)", "cutmix(1.0, switch=0)"), keys[:100])
    always = _uses_cutmix(("mixup(0.2)", "cutmix(1.0, switch=1)"), keys[:100])
    assert never.mean() == 0 and always.mean() > 0.95


def test_batch_groups_pair_only_adjacent_mixup_and_cutmix():
    segments, groups = augment.batch_groups(("flip", "mixup", "cutmix", "jitter", "cutmix", "mixup(0.4)", "mixup"))
    assert [[op.name for op in g] for g in groups] == [["mixup", "cutmix"], ["cutmix", "mixup"], ["mixup"]]
    assert [[op.name for op in s] for s in segments] == [["flip"], ["jitter"], [], []]


def test_the_dense_tasks_refuse_cutmix_and_randaugment_in_one_line():
    from tl_research.tasks.dense import augment as dense_augment
    for op in ("cutmix(1.0)", "randaugment(2, 9)"):
        for allowed, task in ((dense_augment.SEGMENTATION_OPS, "segmentation"),
                              (dense_augment.DETECTION_OPS, "detection")):
            with pytest.raises(ConfigError, match=r"config\.augment=.*cannot move") as e:
                dense_augment.parse(("flip", op), allowed, task)
            assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------- RandAugment

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def _pixel_batch(b=6, h=16, w=12):
    raw = np.random.default_rng(0).integers(0, 256, (b, h, w, 3)).astype(np.uint8)
    raw[:, :4, :4] = 0  # dark and bright corners: autocontrast and solarize have something to do
    raw[:, -4:, -4:] = 255
    images = ((raw.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)
    return raw, images, (-MEAN / STD, (1 - MEAN) / STD)


def _to_pixels(images, pixels):
    zero, full = pixels
    return (np.asarray(images) - zero) / (full - zero) * 255.0


def test_pixel_values_are_the_normalised_values_of_pixels_0_and_255():
    zero, full = augment.pixel_values((0.0, 1.0), MEAN, STD)
    np.testing.assert_allclose(zero, -MEAN / STD, rtol=1e-6)
    np.testing.assert_allclose(full, (1 - MEAN) / STD, rtol=1e-6)
    assert augment.pixel_values((-1, 1), np.float32([0.0]), np.float32([1.0])) == ((-1.0,), (1.0,))  # big_vision's
    hash(augment.pixel_values((0.0, 255.0), MEAN, STD))  # part of the objective: the step's key


def test_randaugment_with_no_layers_is_the_identity():
    raw, images, pixels = _pixel_batch()
    out, _ = _run_augment(("randaugment(n=0, m=9)",), images, np.eye(6, dtype=np.float32), KEY, pixels)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("name", [n for n in augment.RA_OPS if n not in ("autocontrast", "equalize")])
def test_each_randaugment_op_at_magnitude_zero_leaves_the_image_unchanged(name):
    # autocontrast and equalize take no magnitude (they are not the identity by definition)
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 255, (10, 14, 3)).astype(np.float32))
    layer = jax.jit(augment.randaugment_layer)
    for sign in (-1.0, 1.0):
        out = layer(x, augment.RA_OPS.index(name), 0.0, sign, 40.0)
        np.testing.assert_array_equal(out, x)
    # and at magnitude 10 every op but the identity changes it
    if name != "identity":
        assert not np.array_equal(layer(x, augment.RA_OPS.index(name), 1.0, 1.0, 40.0), x)


def test_autocontrast_and_equalize_stretch_each_channel_keeping_the_order_of_its_values():
    # (equalize, as PIL's, spreads levels in steps of (pixels - the top level's count) // 255: it needs more
    # than 255 pixels to do anything)
    x = np.random.default_rng(2).integers(60, 180, (32, 24, 3)).astype(np.float32)
    layer = jax.jit(augment.randaugment_layer)
    for name in ("autocontrast", "equalize"):
        out = np.asarray(layer(jnp.asarray(x), augment.RA_OPS.index(name), 0.9, 1.0, 0.0))
        for c in range(3):
            order = np.argsort(x[..., c], axis=None, kind="stable")
            assert np.all(np.diff(out[..., c].ravel()[order]) >= 0)  # monotone per channel
            assert out[..., c].min() < 5 and out[..., c].max() > 250  # spread over the range


def test_randaugment_is_per_example_deterministic_per_key_and_stays_in_the_pixel_range():
    raw, images, pixels = _pixel_batch(b=24)
    images[:] = images[0]  # one image, 24 times: the examples differ only by their draws
    targets = np.eye(24, dtype=np.float32)
    ops = ("randaugment(n=2, m=9)",)
    a, ta = _run_augment(ops, images, targets, KEY, pixels)
    b, _ = _run_augment(ops, images, targets, KEY, pixels)
    c, _ = _run_augment(ops, images, targets, jax.random.key(1), pixels)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta, targets)
    assert not np.array_equal(a, c)
    distinct = {np.asarray(x).round(4).tobytes() for x in a}
    assert len(distinct) >= 12  # 14 ops twice over: most examples get their own pair
    for ops in (("randaugment(n=2, m=9)",), ("randaugment(n=4, m=30)",), ("randaugment(3, 20, 0.5)",)):
        out, _ = _run_augment(ops, images, targets, KEY, pixels)
        p = _to_pixels(out, pixels)
        assert p.min() >= -1e-3 and p.max() <= 255 + 1e-3


def test_the_classification_objective_applies_randaugment_in_the_runs_pixel_range():
    from tl_research.tasks.classification.task import TASK
    raw, images, pixels = _pixel_batch()
    # a batch whose pixels tell nothing of the normalisation (a channel constant, no 0 or 255 anywhere): the
    # objective has it from the run's normaliser, not from the batch
    raw[:, :4, :4], raw[:, -4:, -4:], raw[..., 1] = 30, 200, 7
    images = ((raw.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)
    ops = ("flip", "randaugment(2, 30)")
    config = ml_collections.ConfigDict({"train": {"label_smoothing": 0.0}})
    data = type("Data", (), {"num_classes": 6})()
    objective = TASK.objective(config, data, augment.parse(ops), normaliser=((0.0, 1.0), MEAN, STD))
    batch = {"image": jnp.asarray(raw), "label": jnp.arange(6)}
    out, targets = jax.jit(objective.prepare)(batch, jnp.asarray(images), KEY)
    # what apply gives with the pipeline's exact normalisation
    expected, _ = _run_augment(ops, images, np.eye(6, dtype=np.float32), KEY, pixels)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    p = _to_pixels(out, pixels)
    assert p.min() >= -1e-3 and p.max() <= 255 + 1e-3 and not np.allclose(out, images)


# ------------------------------------------------------------------------------------------- in a run

def test_a_run_with_every_recipe_flag_trains_and_is_deterministic(tiny_config, tmp_path):
    from tl_research.core.tracking import read_metrics
    from tl_research.run import trainer
    over = {"train.steps": 4, "train.eval_every": 4, "train.log_every": 1, "model.drop_path": 0.3,
            "model.stage_sizes": (2, 2),
            "augment": ("flip", "randaugment(n=2, m=9)", "mixup(0.2)", "cutmix(alpha=1.0, switch=0.5)")}

    def losses(name):
        result = trainer.run(tiny_config(**over), tmp_path / name, progress=False)
        assert result.status == "done", result.reason
        return np.array([r["train_loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl")
                         if "train_loss" in r])

    first, again = losses("a"), losses("b")
    assert len(first) == 4 and np.all(np.isfinite(first))
    np.testing.assert_array_equal(first, again)
