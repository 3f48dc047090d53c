"""ResNet-50 v2 -> Flax: BiT's `.npz` layout against timm's `resnetv2_50x1_bit` loaded from the same file by
timm's own BiT loader (`resnetv2._load_weights`, which reads big_transfer's key names), and
keras.applications.ResNet50V2; logits and every depth unit, random weights and normalisation statistics."""
from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # see test_convert_keras.py

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from real_torchvision import nhwc  # noqa: E402  (and timm imports torchvision)

from tl_research.checkpoints.convert import convert  # noqa: E402
from tl_research.models import resnet_v2  # noqa: E402
from test_convert_common import assert_parity, load_converted, model_cfg, preprocess  # noqa: E402
from test_convert_keras import randomize, reference, save_legacy_h5  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
CLASSES = 7


def _raw(seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)


def bit_npz(path, num_classes, seed=0):
    """A random BiT-R50x1 in big_transfer's npz layout. Weight standardisation makes the kernels' scale
    irrelevant, so they are unit normal; GroupNorm gets random affine parameters."""
    rng = np.random.default_rng(seed)
    normal = lambda *s: rng.standard_normal(s).astype(np.float32)
    p = {"resnet/root_block/standardized_conv2d/kernel": normal(7, 7, 3, 64)}
    c_in = 64
    for s, n in enumerate(resnet_v2.STAGES):
        w = resnet_v2.WIDTHS[s]
        for b in range(n):
            u = f"resnet/block{s + 1}/unit{b + 1:02d}"
            for letter, (cin, k, cout) in zip("abc", ((c_in, 1, w), (w, 3, w), (w, 1, 4 * w))):
                p[f"{u}/{letter}/group_norm/gamma"] = (0.5 + rng.random(cin)).astype(np.float32)
                p[f"{u}/{letter}/group_norm/beta"] = (0.2 * rng.standard_normal(cin)).astype(np.float32)
                p[f"{u}/{letter}/standardized_conv2d/kernel"] = normal(k, k, cin, cout)
            if b == 0:
                p[f"{u}/a/proj/standardized_conv2d/kernel"] = normal(1, 1, c_in, 4 * w)
            c_in = 4 * w
    p["resnet/group_norm/gamma"] = (0.5 + rng.random(c_in)).astype(np.float32)
    p["resnet/group_norm/beta"] = (0.2 * rng.standard_normal(c_in)).astype(np.float32)
    p["resnet/head/conv2d/kernel"] = (normal(1, 1, c_in, num_classes) / np.sqrt(c_in)).astype(np.float32)
    p["resnet/head/conv2d/bias"] = (0.1 * rng.standard_normal(num_classes)).astype(np.float32)
    np.savez(path, **p)
    return path


def test_bit_r50x1_npz_matches_timm_loading_the_same_file(tmp_path, capsys):
    import timm
    from timm.models.resnetv2 import _load_weights
    path = bit_npz(tmp_path / "BiT-M-R50x1.npz", CLASSES)
    ref = timm.create_model("resnetv2_50x1_bit", num_classes=CLASSES).eval()
    _load_weights(ref, str(path))
    weights, meta = convert("npz", path, "resnetv2_50x1_bit")
    assert meta.num_classes == CLASSES and meta.mean == meta.std == (0.5, 0.5, 0.5)
    x = preprocess(_raw(), meta)
    with torch.no_grad():
        h = ref.stem(torch.from_numpy(x.transpose(0, 3, 1, 2)))
        units = [h]
        for i, stage in enumerate(ref.stages):
            h = stage(h)
            units.append(ref.norm(h) if i == len(ref.stages) - 1 else h)  # the final norm ends unit 4
        logits = ref.forward_head(ref.norm(h))
    model = load_converted(weights, model_cfg("resnetv2_50x1_bit"), CLASSES)
    assert model.num_units == 5
    assert_parity(model, x, logits.numpy(), [nhwc(u) for u in units])
    # given as a ViT, the file is recognised
    from tl_research.cli.convert import main
    assert main([str(path), "--arch", "vit_b16", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.rstrip().endswith("this file converts with: --arch resnetv2_50x1_bit")


def test_resnet50_v2_matches_keras(tmp_path):
    m = randomize(keras.applications.ResNet50V2(weights=None, input_shape=(32, 32, 3), classes=CLASSES,
                                                classifier_activation=None))
    names = ["pool1_pool", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "post_relu"]
    raw = _raw()
    ref_logits, ref_units = reference(m, names, raw / 127.5 - 1.0)  # resnet_v2.preprocess_input ("tf")
    weights, meta = convert("keras", save_legacy_h5(m, tmp_path / "resnet50v2.h5"), "resnet50_v2_keras")
    model = load_converted(weights, model_cfg("resnet50_v2_keras"), CLASSES)
    assert_parity(model, preprocess(raw, meta), ref_logits, ref_units)
