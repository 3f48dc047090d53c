"""Segmentation decoders and the CenterNet head on registry backbones; CenterNet targets and decoding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tl_research.tasks.detection import loss as centernet_targets, metrics as detection_metrics

from tl_research import models
from tl_research.core.errors import ConfigError
from tl_research.models import feature_maps
from tl_research.tasks.dense import model as dense
from tl_research.tasks.detection import head as centernet
from tl_research.tasks.segmentation import head as decoders

SIZE = 32


def _cfg(name, **keys):
    cfg = models.default_config()
    cfg.update(decoders.default_config())
    cfg.update(centernet.default_config())
    cfg.name = name
    cfg.update(keys)
    return cfg


def _abstract_heads(name, **keys):
    """Every head's outputs on an abstract backbone, shapes only (jax.eval_shape): nothing is initialised or
    computed, and the backbone is traced once for all heads."""
    cfg = _cfg(name, **keys)
    backbone = models.abstract(cfg, 10, 3)
    shapes = feature_maps.unit_map_shapes(backbone, (SIZE, SIZE, 3))
    heads = {}
    for decoder in decoders.DECODERS:
        cfg.decoder = decoder
        heads[decoder] = nnx.eval_shape(lambda: decoders.build(cfg, shapes, 5, nnx.Rngs(0)))
    heads["centernet"] = nnx.eval_shape(lambda: centernet.build(cfg, shapes, 3, nnx.Rngs(0)))
    cfg.fpn_units = (decoders.auto_skips(shapes) + (decoders.deepest(shapes),))[-3:]  # up to 3 resolutions
    if len(cfg.fpn_units) > 1:
        heads["fpn"] = nnx.eval_shape(lambda: centernet.build(cfg, shapes, 3, nnx.Rngs(0)))
    graphdef, state = nnx.split((backbone, heads))

    def run(state, x):
        backbone, heads = nnx.merge(graphdef, state)
        _, outs = backbone.features(x, return_units=True)
        return {k: head(outs, (SIZE, SIZE)) for k, head in heads.items()}

    out = jax.eval_shape(run, state, jax.ShapeDtypeStruct((2, SIZE, SIZE, 3), jnp.float32))
    return heads, shapes, out


@pytest.mark.parametrize("name, keys", [("resnet18", {}), ("vgg16", {}), ("mobilenet_v2", {}),
                                        ("efficientnet_b0", {}), ("vit_ti16", {"image_size": SIZE})])
def test_decoder_and_centernet_output_shapes_on_every_family(name, keys):
    heads, shapes, out = _abstract_heads(name, **keys)
    assert out["fcn"].shape == out["unet"].shape == (2, SIZE, SIZE, 5)
    if name != "vit_ti16":  # a CNN's U-Net reads one unit per resolution; a ViT's maps share one
        assert len(heads["unet"].skips) >= 3
    h = out["centernet"]["heatmap"].shape[1]
    assert out["centernet"]["heatmap"].shape == (2, h, h, 3)
    assert out["centernet"]["size"].shape == out["centernet"]["offset"].shape == (2, h, h, 2)
    if "fpn" in out:  # the FPN's maps are at the finest of its units' resolutions
        finest = shapes[heads["fpn"].units[0]][0]
        assert out["fpn"]["heatmap"].shape == (2, finest, finest, 3) and finest > h


def test_vit_token_grid_drops_the_class_token_row_major():
    tokens = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3)  # class token + a 2x2 grid
    grid = feature_maps.as_map(tokens, (SIZE, SIZE))
    assert grid.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(grid[:, 1, 0], tokens[:, 3])
    with pytest.raises(ValueError, match="tokens"):
        feature_maps.as_map(tokens[:, :4], (SIZE, SIZE))


def test_a_stride_2_stem_halves_every_unit_map_of_the_cifar_resnet():
    shape = lambda **k: feature_maps.unit_map_shapes(models.abstract(_cfg("resnet_cifar", **k), 10, 3), (64, 64, 3))
    assert shape() == [(64, 64, 16), (64, 64, 16), (32, 32, 32), (16, 16, 64)]
    assert shape(stem_stride=2) == [(32, 32, 16), (32, 32, 16), (16, 16, 32), (8, 8, 64)]
    with pytest.raises(ConfigError, match="config.model.stem_stride=0"):
        models.abstract(_cfg("resnet_cifar", stem_stride=0), 10, 3)


def test_vgg_fc_unit_is_not_a_skip_and_bad_skips_are_refused():
    shapes = feature_maps.unit_map_shapes(models.abstract(_cfg("vgg16"), 10, 3), (SIZE, SIZE, 3))
    assert shapes[-1] is None and decoders.deepest(shapes) == 4
    with pytest.raises(ConfigError, match="model.skips"):
        decoders.check(_cfg("vgg16", decoder="unet", skips=(5,)), shapes)
    with pytest.raises(ConfigError, match="model.decoder"):
        decoders.check(_cfg("vgg16", decoder="deeplab"), shapes)


def test_unet_sees_its_skip_units_and_nothing_else():
    model = dense.build(_cfg("resnet_cifar", decoder="unet", skips=(1,)), decoders.build, 4, 3, (16, 16, 3))
    head = model.head
    # the classifier starts at zero (uniform predictions): give it weights so the output shows its inputs
    head.classifier.kernel[...] = jax.random.normal(jax.random.key(1), head.classifier.kernel.shape)
    assert model.head.units_read == (3, 1)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))

    @nnx.jit
    def responses(model, x):
        """The decoder's output, and its output with each unit's output in turn shifted by 1."""
        outs = model.unit_outputs(x)
        shifted = [model.head(outs[:k] + [outs[k] + 1.0] + outs[k + 1:], (16, 16)) for k in range(len(outs))]
        return model.head(outs, (16, 16)), shifted

    base, shifted = responses(model, x)
    assert not np.allclose(shifted[1], base)  # the skip
    assert not np.allclose(shifted[3], base)  # the deepest map
    np.testing.assert_array_equal(shifted[2], base)  # units the decoder does not read
    np.testing.assert_array_equal(shifted[0], base)
    graphdef, state = nnx.split(model)
    assert jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x).shape == (2, 16, 16, 4)


BOXES = np.array([[[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8], [0.55, 0.1, 0.95, 0.45], [0, 0, 0, 0]],
                  [[0.2, 0.3, 0.6, 0.7], [0.0, 0.0, 0.2, 0.2], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
CLASSES = np.array([[0, 2, 0, -1], [1, 1, -1, -1]], np.int32)
GRID = (24, 24)


def _perfect_outputs(t):
    """Head outputs that are the targets: heatmap logits of the rendered heatmap, size and offset written at
    each centre cell."""
    b, h, w, _ = t["heatmap"].shape
    rows = jnp.arange(b)[:, None].repeat(t["index"].shape[1], 1)
    cells = jnp.where(t["valid"], t["index"], h * w)  # padding boxes write nowhere
    dense_map = lambda v: jnp.zeros((b, h * w, 2)).at[rows, cells].set(v, mode="drop").reshape(b, h, w, 2)
    p = jnp.clip(t["heatmap"], 1e-6, 1 - 1e-6)
    return {"heatmap": jnp.log(p) - jnp.log1p(-p), "size": dense_map(t["size"]), "offset": dense_map(t["offset"])}


def test_rendered_heatmap_peaks_at_one_on_every_box_centre():
    t = jax.jit(centernet_targets.render, static_argnums=(2, 3))(BOXES, CLASSES, GRID, 3)
    heat = np.asarray(t["heatmap"])
    for b, n in zip(*np.nonzero(CLASSES >= 0)):
        cy = (BOXES[b, n, 0] + BOXES[b, n, 2]) / 2 * GRID[0]
        cx = (BOXES[b, n, 1] + BOXES[b, n, 3]) / 2 * GRID[1]
        assert heat[b, int(cy), int(cx), CLASSES[b, n]] == 1.0
    assert (heat == 1.0).sum() == (CLASSES >= 0).sum()  # no other cell is a positive
    assert heat.max() <= 1.0 and heat[1, ..., 0].max() == 0.0  # image 1 has no class-0 box
    assert centernet_targets.gaussian_radius(jnp.array(7.2), jnp.array(9.6)) == pytest.approx(2.2528, abs=1e-4)


@jax.jit
def _decoded_and_losses(boxes, classes):
    t = centernet_targets.render(boxes, classes, GRID, 3)
    out = _perfect_outputs(t)
    zero = jax.tree.map(jnp.zeros_like, out)
    first = lambda tree: jax.tree.map(lambda v: v[:1], tree)
    return {"decoded": centernet.decode(out, 10), "perfect": centernet_targets.loss(out, t),
            "zero": centernet_targets.loss(zero, t),
            "masked": centernet_targets.loss(zero, t, example_mask=jnp.array([True, False])),
            "first": centernet_targets.loss(first(zero), first(t))}


def test_decoding_rendered_targets_recovers_the_boxes():
    r = _decoded_and_losses(BOXES, CLASSES)
    boxes, scores, classes = r["decoded"]
    assert boxes.shape == (2, 10, 4) and scores.shape == classes.shape == (2, 10)
    m = detection_metrics.coco_map(BOXES, CLASSES, boxes, scores, classes, num_classes=3, image_size=(96, 96))
    assert m == pytest.approx({"map": 1.0, "map50": 1.0, "map75": 1.0})
    # the loss of the targets is near 0, that of a zero output is not; padding examples count nowhere
    total, parts = r["perfect"]
    assert float(parts["size"]) == pytest.approx(0.0, abs=1e-5) and float(parts["objects"]) == 5
    assert float(r["zero"][0]) > 10 * float(total)
    assert float(r["masked"][1]["objects"]) == 3
    assert float(r["masked"][1]["heatmap"]) == pytest.approx(float(r["first"][1]["heatmap"]), rel=1e-5)
    assert float(r["masked"][1]["size"]) == pytest.approx(float(r["first"][1]["size"]), rel=1e-5)
