"""DenseNet-121 from its two published layouts -> Flax: logits and every depth unit (the stem, each dense block
with its transition) match keras.applications.DenseNet121 and torchvision 0.28.0's densenet121, with random
weights and random BatchNorm statistics, at 64 px; torchvision's published file, which still has the dense
layer names from before torchvision 0.4, converts to the same weights.

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
from tl_research.checkpoints.convert import convert, run  # noqa: E402
from test_convert_common import assert_parity, load_converted, model_cfg, preprocess  # noqa: E402
from test_convert_keras import randomize, reference, save_legacy_h5  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
CLASSES = 7
SIZE = 64
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _raw(seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)


def _imagenet(raw):
    return ((raw / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def _check(path, fmt, arch, ref_logits, ref_units, raw):
    weights, meta = convert(fmt, path, arch, model_cfg=model_cfg(arch))
    assert meta.num_classes == CLASSES and meta.mean == tuple(IMAGENET_MEAN) and meta.std == tuple(IMAGENET_STD)
    model = load_converted(weights, model_cfg(arch), CLASSES)
    assert model.num_units == 5
    assert_parity(model, preprocess(raw, meta), ref_logits, ref_units)
    return weights


def test_densenet121_matches_keras(tmp_path):
    m = randomize(keras.applications.DenseNet121(weights=None, input_shape=(SIZE, SIZE, 3), classes=CLASSES,
                                                 classifier_activation=None))
    raw = _raw()
    # keras.applications.densenet.preprocess_input ("torch" mode): x / 255, then ImageNet mean / std
    logits, units = reference(m, ["pool1", "pool2_pool", "pool3_pool", "pool4_pool", "relu"], _imagenet(raw))
    _check(save_legacy_h5(m, tmp_path / "densenet121.h5"), "keras", "densenet121_keras", logits, units, raw)


def _torch_units(m, x):
    """(logits of the model's own forward, [stem, block1 + transition1, ..., block4 + norm5 + ReLU])."""
    with torch.no_grad():
        logits, outs, h = m(x), [], x
        for name, layer in m.features.named_children():
            h = layer(h)
            if name in ("pool0", "transition1", "transition2", "transition3"):
                outs.append(h)
        outs.append(torch.relu(h))
    return logits.numpy(), [nhwc(u) for u in outs]


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    from real_torchvision import models as tv
    ref = randomize_(tv.densenet121(num_classes=CLASSES), seed=4)
    path = tmp_path_factory.mktemp("densenet") / "densenet121.safetensors"
    save_file(ref.state_dict(), path)
    return ref, path


def test_densenet121_matches_torchvision_and_reads_the_published_names(torchvision_file, tmp_path):
    ref, path = torchvision_file
    raw = _raw()
    logits, units = _torch_units(ref, torch.from_numpy(_imagenet(raw).transpose(0, 3, 1, 2)))
    weights = _check(path, "torch", "densenet121", logits, units, raw)
    # densenet121-a639ec97.pth names its dense layers' parts norm.1, conv.1, norm.2, conv.2 (torchvision
    # renames them on load with a regular expression); the same tensors under those names
    old = {k.replace(".norm1.", ".norm.1.").replace(".conv1.", ".conv.1.").replace(".norm2.", ".norm.2.")
           .replace(".conv2.", ".conv.2."): v for k, v in ref.state_dict().items()
           if not k.endswith("num_batches_tracked")}
    assert "features.denseblock4.denselayer16.conv.2.weight" in old
    torch.save(old, tmp_path / "densenet121-a639ec97.pth")
    conversion = run("torch", tmp_path / "densenet121-a639ec97.pth", "densenet121")
    assert "before torchvision 0.4" in conversion.summary()
    for coll, table in weights.items():
        assert conversion.weights[coll].keys() == table.keys()
        assert all(np.array_equal(conversion.weights[coll][k], v) for k, v in table.items())


def test_another_arch_is_refused_with_the_one_that_converts(torchvision_file, tmp_path, capsys):
    from tl_research.cli.convert import main
    _, path = torchvision_file
    assert main([str(path), "--arch", "resnet18", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) <= 8
    assert err.rstrip().endswith("this file converts with: --arch densenet121")
