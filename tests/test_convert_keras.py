"""Keras applications .h5 files -> Flax: logits and every depth unit match keras.applications models with
random weights (and random BatchNorm statistics), saved in the legacy layer-named layout of the downloads.

The Keras backend is set to PyTorch here, explicitly (torch is a test dependency): the converter never
imports Keras, so the backend only runs the reference, and with JAX Keras compiles every initializer and op
of a model one by one (MobileNetV2 builds in about 24 s on two CPU cores, 9 s with PyTorch). The random
weights are set so that they take effect on either backend (see `randomize`; on JAX, in a process of its
own: `test_randomized_normalization_takes_effect_on_the_jax_backend`). The backend is chosen when Keras is
first imported, so every test file that imports Keras sets the same one.
"""
from __future__ import annotations

import json
import os

os.environ["KERAS_BACKEND"] = "torch"

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

from tl_research.checkpoints import keras as keras_ckpt  # noqa: E402
from tl_research.checkpoints.convert import convert, run  # noqa: E402
from tl_research.checkpoints.weights import CheckpointMismatch, transfer  # noqa: E402
from test_convert_common import assert_parity, load_converted, model_cfg, preprocess, zeros_model  # noqa: E402

# Keras warns about non-ImageNet input sizes and, on the torch backend, about numpy's copy keyword.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
CLASSES = 7
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


def randomize(model, seed=0):
    """Random weights with O(1) activations and non-trivial BatchNorm statistics."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            shape, name = tuple(w.shape), w.name
            if name in ("gamma", "moving_variance"):
                v = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "moving_mean"):
                v = rng.normal(0, 0.2, shape)
            elif name == "bias":
                v = rng.normal(0, 0.1, shape)
            elif name == "kernel":
                depthwise = type(layer).__name__ == "DepthwiseConv2D"
                v = rng.normal(0, 1, shape) / np.sqrt(np.prod(shape[:2] if depthwise else shape[:-1]))
            elif name == "mean":  # EfficientNet's input Normalization
                v = rng.uniform(0.3, 0.6, shape)
            elif name == "variance":
                v = rng.uniform(0.04, 0.09, shape)
            else:
                v = keras.ops.convert_to_numpy(w)
            values.append(np.asarray(v, np.asarray(keras.ops.convert_to_numpy(w)).dtype))
        if values:
            layer.set_weights(values)
        if type(layer).__name__ == "Normalization":
            # the layer computes its scale once from its mean/variance variables: on the JAX backend (whose
            # arrays are immutable) set_weights alone leaves the old, adapt-free values in use
            layer.finalize_state()
    return model


def save_legacy_h5(model, path):
    """The layout keras.applications downloads: `layer_names`, one group per layer, `weight_names`."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def reference(model, names, x):
    """(logits or None, [outputs of the named layers]) of a Keras model in inference mode."""
    sub = keras.Model(model.input, [model.get_layer(n).output for n in names] + [model.output])
    outs = [np.asarray(keras.ops.convert_to_numpy(o)) for o in sub(x, training=False)]
    return outs[-1], outs[:-1]


def _raw(size=32, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype(np.float32)


def _check(kmodel, path, arch, names, keras_input, raw, *, top=True, **cfg):
    weights, meta = convert("keras", path, arch, model_cfg=model_cfg(arch, **cfg))
    ref_logits, ref_units = reference(kmodel, names, keras_input)
    x = preprocess(raw, meta)  # what the metadata prescribes must reproduce Keras' own preprocessing
    if top:
        assert meta.num_classes == CLASSES
        model = load_converted(weights, model_cfg(arch, **cfg), CLASSES)
    else:
        model = zeros_model(model_cfg(arch, **cfg), CLASSES)
        report = transfer(model, weights)
        assert report.head_reinitialised
    assert_parity(model, x, ref_logits, ref_units, check_logits=top)
    return weights, meta


def test_resnet50_matches_keras_with_caffe_preprocessing_in_rgb(tmp_path):
    m = randomize(keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=CLASSES,
                                              classifier_activation=None))
    names = ["pool1_pool"] + [f"conv{s + 2}_block{b + 1}_out" for s, n in enumerate((3, 4, 6, 3))
                              for b in range(n)]
    raw = _raw()
    # keras.applications.resnet50.preprocess_input: RGB -> BGR, minus the BGR mean.
    _, meta = _check(m, save_legacy_h5(m, tmp_path / "resnet50.h5"), "resnet50_keras", names,
                     raw[..., ::-1] - CAFFE_BGR_MEAN, raw)
    assert meta.value_range == (0.0, 255.0) and meta.std == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("alpha", [1.0, 0.35, 0.5, 0.75, 1.3, 1.4])  # every width Keras publishes
def test_mobilenet_v2_matches_keras(tmp_path, capsys, alpha):
    m = randomize(keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=CLASSES,
                                                 alpha=alpha, classifier_activation=None))
    layers = {layer.name for layer in m.layers}
    names = ["Conv1_relu", "expanded_conv_project_BN"]
    names += [f"block_{i}_add" if f"block_{i}_add" in layers else f"block_{i}_project_BN" for i in range(1, 17)]
    raw = _raw()
    path = save_legacy_h5(m, tmp_path / f"mobilenet_v2_{alpha}.h5")
    _check(m, path, "mobilenet_v2_keras", names + ["out_relu"], raw / 127.5 - 1.0, raw, width_multiplier=alpha)
    if alpha == 0.35:  # the convert command: the family name and no width, both taken from the file
        from tl_research.cli.convert import main
        capsys.readouterr()
        assert main([str(path), "--arch", "mobilenet_v2", "--out", str(tmp_path / "o")]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == (f"inferred from {path}: --format keras --arch mobilenet_v2_keras "
                                       f"--width-multiplier 0.35")
        info = json.loads((tmp_path / "o" / "meta.json").read_text())["converted_from"]
        assert info["arch"] == "mobilenet_v2_keras" and info["width_multiplier"] == 0.35
        assert main([str(path), "--out", str(tmp_path / "o2")]) == 0  # no --arch: the one that fits
        assert "--arch mobilenet_v2_keras --width-multiplier 0.35" in capsys.readouterr().out
        # a width given that the file does not have: a short error that names the right one
        assert main([str(path), "--arch", "mobilenet_v2_keras", "--width-multiplier", "1.0",
                     "--out", str(tmp_path / "o3")]) == 2
        err = capsys.readouterr().err
        assert "shape mismatch (" in err and len(err.splitlines()) <= 6 and "Traceback" not in err
        assert err.endswith("this file converts with: --arch mobilenet_v2_keras --width-multiplier 0.35\n")
        assert not (tmp_path / "o3").exists()


def test_efficientnet_b0_matches_keras_with_its_normalisation_in_the_metadata(tmp_path):
    m = randomize(keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=CLASSES,
                                                    classifier_activation=None))
    layers = {layer.name for layer in m.layers}
    names = ["stem_activation"]
    for s, n in enumerate((1, 2, 2, 3, 3, 4, 1)):
        for j in range(n):
            p = f"block{s + 1}{chr(ord('a') + j)}_"
            names.append(p + "add" if p + "add" in layers else p + "project_bn")
    raw = _raw()
    # The Keras model takes 0..255 pixels and normalises inside; the metadata now carries that normalisation.
    _, meta = _check(m, save_legacy_h5(m, tmp_path / "efficientnetb0.h5"), "efficientnet_b0_keras",
                     names + ["top_activation"], raw, raw)
    stored = m.get_layer("normalization").get_weights()
    np.testing.assert_allclose(meta.mean, stored[0], rtol=1e-6)
    np.testing.assert_allclose(meta.std, np.sqrt(stored[1]), rtol=1e-6)


_JAX_NORMALIZATION = r"""
import json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
sys.path[:0] = [{root!r}, {tests!r}]
import keras
import numpy as np
from test_convert_keras import randomize  # (its KERAS_BACKEND=torch comes after Keras' import: no effect)
inp = keras.Input((5, 5, 3))
norm = keras.layers.Normalization(axis=-1)  # as keras.applications' EfficientNet builds it: no mean, no adapt
m = randomize(keras.Model(inp, norm(keras.layers.Rescaling(1.0 / 255.0)(inp))), seed=3)
mean, variance, _ = norm.get_weights()
x = np.random.default_rng(4).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
got = keras.ops.convert_to_numpy(m(x))
print(json.dumps(dict(backend=keras.backend.backend(), mean=mean.tolist(), variance=variance.tolist(),
                      error=float(np.max(np.abs(got - (x / 255.0 - mean) / np.sqrt(variance)))))))
"""


def test_randomized_normalization_takes_effect_on_the_jax_backend():
    # Keras picks its backend when first imported, so JAX runs in a process of its own. There the layer
    # computes from the variables built with it unless `randomize` refreshes that state after set_weights.
    import json
    import pathlib
    import subprocess
    import sys
    tests = pathlib.Path(__file__).resolve().parent
    script = _JAX_NORMALIZATION.format(root=str(tests.parent), tests=str(tests))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["backend"] == "jax"
    assert min(info["mean"]) >= 0.3 and max(info["variance"]) <= 0.09  # randomize's values, not 0 and 1
    assert info["error"] < 1e-5


def test_efficientnet_published_normalisation_matches_keras_on_random_pixels():
    # The published files store the std as "variance": keras.applications' EfficientNet (weights="imagenet")
    # then divides by sqrt(stddev) once more after its Normalization layer. The metadata's normalisation must
    # give what those Keras layers give, on random pixels (and a random stored mean).
    from tl_research.models import META
    rng = np.random.default_rng(4)
    mean = rng.uniform(0.3, 0.6, 3).astype(np.float32)
    stddev = np.array(keras_ckpt.IMAGENET_STDDEV_RGB, np.float32)
    src = {"normalization/mean": mean, "normalization/variance": stddev}
    meta, _ = keras_ckpt.efficientnet_normalisation(src, META["efficientnet_b0_keras"])
    x = rng.uniform(0, 1, (4, 5, 5, 3)).astype(np.float32)  # pixels after Keras' Rescaling(1 / 255)
    y = keras.layers.Normalization(mean=mean, variance=stddev)(x)
    expected = keras.ops.convert_to_numpy(keras.layers.Rescaling([1 / np.sqrt(s) for s in stddev])(y))
    assert np.std(expected) > 0.5  # the comparison is not between constants
    got = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(meta.std, (0.229, 0.224, 0.225), rtol=1e-6)
    # a file whose variance is its own (the test above: keras.applications with weights=None) is not divided
    var = rng.uniform(0.04, 0.09, 3).astype(np.float32)
    meta, _ = keras_ckpt.efficientnet_normalisation({**src, "normalization/variance": var},
                                                    META["efficientnet_b0_keras"])
    expected = keras.ops.convert_to_numpy(keras.layers.Normalization(mean=mean, variance=var)(x))
    got = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_vgg16_no_top_matches_keras_and_needs_fc_units_0(tmp_path):
    m = randomize(keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), include_top=False))
    raw = _raw()
    path = save_legacy_h5(m, tmp_path / "vgg16_notop.h5")
    _check(m, path, "vgg16_keras", [f"block{b}_pool" for b in range(1, 6)], raw[..., ::-1] - CAFFE_BGR_MEAN,
           raw, top=False, fc_units=0)
    with pytest.raises(CheckpointMismatch, match=r"missing from the checkpoint: fc1/kernel.*fc_units=0"):
        convert("keras", path, "vgg16_keras")


def test_vgg16_fc_layers_follow_keras_flatten_order(tmp_path):
    # VGG16-with-top only accepts 224px (15 GFLOPs an image), so the fc part is checked on its own: Keras'
    # Flatten of the 7x7x512 map -> fc1 -> fc2 -> predictions (narrowed to 64 units), converted by the
    # vgg16_keras table's rows and run through the Flax fc unit and head.
    from flax import nnx

    from tl_research.models import vgg
    inp = keras.Input((7, 7, 512))
    x = keras.layers.Flatten(name="flatten")(inp)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(64, activation="relu", name="fc2")(x)
    m = randomize(keras.Model(inp, keras.layers.Dense(CLASSES, name="predictions")(x)))
    source = keras_ckpt.read(save_legacy_h5(m, tmp_path / "fc.h5"))
    fc = vgg.FullyConnected(512, 64, rngs=nnx.Rngs(0))
    head = nnx.Linear(64, CLASSES, rngs=nnx.Rngs(0))
    targets = {"units.5.fc6.kernel": fc.fc6.kernel, "units.5.fc6.bias": fc.fc6.bias,
               "units.5.fc7.kernel": fc.fc7.kernel, "units.5.fc7.bias": fc.fc7.bias,
               "head.classifier.kernel": head.kernel, "head.classifier.bias": head.bias}
    rows = [r for r in keras_ckpt.vgg16_table(64).rows if r.target in targets]
    assert sorted(r.source for r in rows) == sorted(source)
    for r in rows:
        targets[r.target].set_value(r.transform(source[r.source]))
    x = np.random.default_rng(3).standard_normal((2, 7, 7, 512)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(m(x))
    np.testing.assert_allclose(np.asarray(head(fc(x))), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def mobilenet_no_top():
    return randomize(keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False))


def test_full_model_h5_and_keras2_weight_names_are_read(mobilenet_no_top, tmp_path):
    m = mobilenet_no_top
    legacy = keras_ckpt.read(save_legacy_h5(m, tmp_path / "w.h5"))
    m.save(tmp_path / "full.h5")  # legacy full-model file: the same groups under model_weights/
    np.testing.assert_array_equal(keras_ckpt.read(tmp_path / "full.h5")["block_3_depthwise/kernel"],
                                  legacy["block_3_depthwise/kernel"])
    # Keras 2 / TF files name datasets "<layer>/depthwise_kernel:0".
    with h5py.File(tmp_path / "k2.h5", "w") as f:
        f.attrs["layer_names"] = [b"Conv1"]
        g = f.create_group("Conv1")
        g.attrs["weight_names"] = [b"Conv1/depthwise_kernel:0"]
        g["Conv1/depthwise_kernel:0"] = np.ones((3, 3, 4, 1), np.float32)
    assert list(keras_ckpt.read(tmp_path / "k2.h5")) == ["Conv1/kernel"]


def test_keras3_weights_file_is_refused_with_advice(mobilenet_no_top, tmp_path):
    mobilenet_no_top.save_weights(tmp_path / "m.weights.h5")
    with pytest.raises(ValueError, match="legacy HDF5 layout"):
        run("keras", tmp_path / "m.weights.h5", "mobilenet_v2_keras")


def test_extra_and_missing_layers_are_named(mobilenet_no_top, tmp_path):
    path = save_legacy_h5(mobilenet_no_top, tmp_path / "w.h5")
    with h5py.File(path, "a") as f:
        f.attrs["layer_names"] = np.array(list(f.attrs["layer_names"]) + [b"extra_conv"], dtype="S")
        g = f.create_group("extra_conv")
        g.attrs["weight_names"] = [b"extra_conv/kernel:0"]
        g["extra_conv/kernel:0"] = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(CheckpointMismatch, match="not map: extra_conv/kernel"):
        convert("keras", path, "mobilenet_v2_keras")
    with h5py.File(path, "a") as f:
        keep = [n for n in f.attrs["layer_names"] if n not in (b"extra_conv", b"block_5_project_BN")]
        f.attrs["layer_names"] = np.array(keep, dtype="S")
    with pytest.raises(CheckpointMismatch, match="missing from the checkpoint: block_5_project_BN/gamma"):
        convert("keras", path, "mobilenet_v2_keras")
