"""Inception-v3 from its three published layouts -> Flax: logits and every depth unit (the stem and each Mixed
block) match the libraries' own model code, keras.applications.InceptionV3, torchvision 0.28.0's
inception_v3 (aux_logits and transform_input on, as for the published weights) and timm's inception_v3, with
random weights and random BatchNorm statistics, at 75 px (the smallest input Keras accepts).

The Keras backend is PyTorch, set explicitly (see test_convert_keras.py).
"""
from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from real_torchvision import nhwc, randomize_  # noqa: E402
from tl_research.checkpoints import keras as keras_ckpt  # noqa: E402
from tl_research.checkpoints.convert import run  # noqa: E402
from tl_research.models import inception  # noqa: E402
from test_convert_common import assert_parity, load_converted, model_cfg, preprocess  # noqa: E402
from test_convert_keras import randomize, reference, save_legacy_h5  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]
CLASSES = 7
SIZE = 75
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _raw(seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)


def _check(path, fmt, arch, ref_logits, ref_units, raw):
    conversion = run(fmt, path, arch, model_cfg=model_cfg(arch))
    meta = conversion.meta
    assert meta.num_classes == CLASSES and meta.mean == (0.5, 0.5, 0.5) and meta.std == (0.5, 0.5, 0.5)
    model = load_converted(conversion.weights, model_cfg(arch), CLASSES)
    assert model.num_units == 12
    assert_parity(model, preprocess(raw, meta), ref_logits, ref_units)
    return conversion


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    # Layers created first, so the model's auto-numbered names start above 0 as in the published file
    # (conv2d_1 ... conv2d_94, which Keras 2.0 wrote) rather than at "conv2d".
    keras.layers.Conv2D(1, 1), keras.layers.BatchNormalization()
    m = randomize(keras.applications.InceptionV3(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                                                 classifier_activation=None))
    return m, save_legacy_h5(m, tmp_path_factory.mktemp("inception") / "inception_v3.h5")


def test_inception_v3_matches_keras(keras_file):
    m, path = keras_file
    names = [layer.name for layer in m.layers]
    assert "conv2d" not in names and "batch_normalization" not in names  # numbered from above 0
    stem = [layer.name for layer in m.layers if type(layer).__name__ == "MaxPooling2D"][1]
    raw = _raw()
    # keras.applications.inception_v3.preprocess_input ("tf" mode): x / 127.5 - 1
    logits, units = reference(m, [stem] + [f"mixed{i}" for i in range(11)], raw / 127.5 - 1.0)
    _check(path, "keras", "inception_v3_keras", logits, units, raw)


def test_keras_layer_numbering_follows_the_file():
    # conv2d, conv2d_1, ... (a fresh Keras 3 session) and conv2d_1 ... conv2d_94 (the published file)
    for first in (0, 1):
        source = {f"{keras_ckpt._auto_name('conv2d', first + i)}/kernel": None for i in range(94)}
        rows = [r.source for r in keras_ckpt.inception_v3_table(source).rows if r.source.endswith("/kernel")]
        assert rows[0] == ("conv2d/kernel" if first == 0 else "conv2d_1/kernel")
        assert rows[93] == f"conv2d_{first + 93}/kernel" and rows[94] == "predictions/kernel"


def _torch_units(m, x):
    """(logits of the model's own forward, [stem, Mixed_5b, ..., Mixed_7c]) of a torchvision or timm model."""
    with torch.no_grad():
        logits = m(x)
        h = m._transform_input(x) if hasattr(m, "_transform_input") else x
        pools = (m.maxpool1, m.maxpool2) if hasattr(m, "maxpool1") else (m.Pool1, m.Pool2)  # torchvision, timm
        for layer in (m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, pools[0], m.Conv2d_3b_1x1,
                      m.Conv2d_4a_3x3, pools[1]):
            h = layer(h)
        outs = [h]
        for name, *_ in inception.MIXED:
            outs.append(getattr(m, name)(outs[-1]))
    return logits.numpy(), [nhwc(u) for u in outs]


def test_inception_v3_matches_torchvision_with_transform_input_and_sets_aside_the_aux_classifier(tmp_path):
    from real_torchvision import models as tv
    ref = randomize_(tv.inception_v3(num_classes=CLASSES, init_weights=False, aux_logits=True,
                                       transform_input=True), seed=2)
    path = tmp_path / "inception_v3_google.pth"
    torch.save(ref.state_dict(), path)
    raw = _raw()
    # torchvision's preprocessing (ImageNet mean/std); transform_input turns it into what the metadata says
    x = ((raw / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)
    logits, units = _torch_units(ref, torch.from_numpy(x.transpose(0, 3, 1, 2)))
    conversion = _check(path, "torch", "inception_v3", logits, units, raw)
    aux = sorted(k for k in conversion.set_aside if k.startswith("AuxLogits."))
    assert aux == sorted(k for k in ref.state_dict() if k.startswith("AuxLogits."))
    assert "not loaded (auxiliary classifier" in conversion.summary()


def test_inception_v3_matches_timm(tmp_path):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):  # no initialisation: randomize_ sets every tensor (timm's own init takes seconds)
        ref = timm.create_model("inception_v3", pretrained=False, num_classes=CLASSES)
    ref = randomize_(ref.to_empty(device="cpu"), seed=3)
    save_file(ref.state_dict(), tmp_path / "model.safetensors")  # timm/inception_v3.tv_in1k's file name
    raw = _raw()
    x = ((raw / 255.0 - 0.5) / 0.5).astype(np.float32)  # timm's tv_in1k config: mean = std = 0.5
    logits, units = _torch_units(ref, torch.from_numpy(x.transpose(0, 3, 1, 2)))
    _check(tmp_path / "model.safetensors", "torch", "inception_v3", logits, units, raw)


def test_another_arch_is_refused_with_the_one_that_converts(keras_file, tmp_path, capsys):
    from tl_research.cli.convert import main
    _, path = keras_file
    assert main([str(path), "--arch", "vgg16_keras", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) <= 8
    assert err.rstrip().endswith("this file converts with: --arch inception_v3_keras")
