"""MobileNetV3 Small / Large -> Flax: logits and every depth unit match keras.applications (Small with its
top, Keras 3 and Keras 2 layer names; Large from a no-top file), torchvision 0.28.0's and timm's own models
(both variants each), with random weights and random BatchNorm statistics, at 32 px."""
from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # see test_convert_keras.py

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

from real_torchvision import build, models as tv, nhwc  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from tl_research.checkpoints.convert import convert  # noqa: E402
from tl_research.checkpoints.weights import transfer  # noqa: E402
from test_convert_common import assert_parity, load_converted, model_cfg, preprocess, zeros_model  # noqa: E402
from test_convert_keras import reference, randomize, save_legacy_h5  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
CLASSES = 7
STAGE_ENDS = {"small": (0, 2, 5, 7, 10), "large": (0, 2, 5, 9, 11, 14)}  # each stage's last block


def _raw(seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)


def _keras_unit_names(model, variant, top):
    layers = {layer.name for layer in model.layers}
    names = [[layer.name for layer in model.layers if layer.name.startswith("activation")][0]]  # stem
    for i in STAGE_ENDS[variant]:
        p = "expanded_conv_" if i == 0 else f"expanded_conv_{i}_"
        names.append(p + "add" if p + "add" in layers else p + "project_bn")
    last = model.get_layer("conv_1_bn")
    after = [layer.name for layer in model.layers]
    names.append(after[after.index(last.name) + 1])  # the hard-swish after conv_1
    if top:
        names.append(after[after.index("conv_2") + 1])
    return names


@pytest.fixture(scope="module")
def keras_large_no_top(tmp_path_factory):
    """keras.applications' MobileNetV3Large without its top, random, in the published no-top file layout."""
    m = randomize(keras.applications.MobileNetV3Large(weights=None, input_shape=(32, 32, 3), include_top=False))
    return m, save_legacy_h5(m, tmp_path_factory.mktemp("v3") / "mobilenet_v3_large_keras_no_top.h5")


@pytest.mark.parametrize("variant,top", [("small", True), ("large", False)])
def test_mobilenet_v3_matches_keras(tmp_path, request, variant, top):
    if top:
        m = randomize(keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=CLASSES,
                                                          classifier_activation=None, dropout_rate=0.0))
        path = save_legacy_h5(m, tmp_path / "mobilenet_v3_small_keras.h5")
    else:
        m, path = request.getfixturevalue("keras_large_no_top")
    arch, raw = f"mobilenet_v3_{variant}_keras", _raw()
    ref_logits, ref_units = reference(m, _keras_unit_names(m, variant, top), raw)  # Keras rescales 0..255 itself
    if top:  # the pooled 1x1-conv outputs are (N, 1, 1, C)
        ref_units[-1] = ref_units[-1].reshape(2, -1)
        ref_logits = ref_logits.reshape(2, -1)
    cfg = model_cfg(arch, fc_units=4096 if top else 0)
    weights, meta = convert("keras", path, arch, model_cfg=cfg)
    x = preprocess(raw, meta)
    if top:
        model = load_converted(weights, cfg, CLASSES)
    else:
        model = zeros_model(cfg, CLASSES)
        assert transfer(model, weights).head_reinitialised
    assert_parity(model, x, ref_logits, ref_units, check_logits=top)
    if top:  # the Keras 2 spelling of the published files converts to the same weights
        _check_keras2_names(path, tmp_path / "keras2.h5", arch, cfg, weights)


def test_keras_large_no_top_needs_fc_units_0_and_the_cli_says_so(keras_large_no_top, tmp_path, capsys):
    from tl_research.cli.convert import main
    _, path = keras_large_no_top  # converts with fc_units=0: test_mobilenet_v3_matches_keras[large-False]
    # without --fc-units the converter reads it from the file (no pre-logits layer) and says so
    assert main([str(path), "--arch", "mobilenet_v3_large_keras", "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"inferred from {path}: --format keras --fc-units 0"
    # given a value the file does not have, it is refused with the options that convert it
    assert main([str(path), "--arch", "mobilenet_v3_large_keras", "--fc-units", "4096",
                 "--out", str(tmp_path / "o4096")]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith("this file converts with: --arch mobilenet_v3_large_keras --fc-units 0"), err
    assert main([str(path), "--arch", "mobilenet_v3_small_keras", "--out", str(tmp_path / "o")]) == 2
    assert "this file converts with: --arch mobilenet_v3_large_keras --fc-units 0" in capsys.readouterr().err


def _keras2(name: str) -> str:
    """A Keras 3 layer name of MobileNetV3 -> its Keras 2 spelling (keras 2.x applications/mobilenet_v3.py)."""
    fixed = {"conv": "Conv", "conv_bn": "Conv/BatchNorm", "conv_1": "Conv_1", "conv_1_bn": "Conv_1/BatchNorm",
             "conv_2": "Conv_2", "logits": "Logits"}
    if name in fixed:
        return fixed[name]
    for part in ("squeeze_excite_conv_1", "squeeze_excite_conv", "expand_bn", "depthwise_bn", "project_bn",
                 "expand", "depthwise", "project"):
        if name.endswith("_" + part):
            prefix = name[: -len(part) - 1]
            k2 = part.replace("squeeze_excite_conv_1", "squeeze_excite/Conv_1").replace(
                "squeeze_excite_conv", "squeeze_excite/Conv").replace("_bn", "/BatchNorm")
            return ("expanded_conv" if prefix == "expanded_conv" else prefix) + "/" + k2
    return name


def _check_keras2_names(src, dst, arch, cfg, expected):
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        layers = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        g.attrs["layer_names"] = np.array([_keras2(n).encode() for n in layers], dtype="S")
        for layer in layers:
            group = g.create_group(_keras2(layer))
            wnames = [n.decode() if isinstance(n, bytes) else n for n in f[layer].attrs["weight_names"]]
            group.attrs["weight_names"] = np.array([f"{_keras2(layer)}/{w.split('/')[-1]}:0".encode()
                                                    for w in wnames], dtype="S")
            for w in wnames:
                group[f"{_keras2(layer)}/{w.split('/')[-1]}:0"] = np.asarray(f[layer][w])
    assert "Conv/BatchNorm" in h5py.File(dst, "r").attrs["layer_names"].astype(str).tolist()
    weights, _ = convert("keras", dst, arch, model_cfg=cfg)
    for coll in ("params", "batch_stats"):
        assert weights[coll].keys() == expected[coll].keys()
        for k in expected[coll]:
            np.testing.assert_array_equal(weights[coll][k], expected[coll][k])


class _TorchUnits:
    """`units(x)` of a torchvision / timm MobileNetV3 grouped into this codebase's units."""

    def __init__(self, model, variant, kind):
        self.model, self.variant, self.kind = model, variant, kind

    def units(self, x):
        m, outs = self.model, []
        with torch.no_grad():
            if self.kind == "timm":
                x = m.bn1(m.conv_stem(x))  # timm's BatchNormAct2d applies the hard-swish
                outs.append(x)
                for stage in m.blocks:
                    x = stage(x)
                    outs.append(x)
                x = m.flatten(m.act2(m.norm_head(m.conv_head(m.global_pool(x)))))
                outs.append(x)
                return m.classifier(x), outs
            ends = {e + 1 for e in STAGE_ENDS[self.variant]} | {0, len(m.features) - 1}
            for i, layer in enumerate(m.features):
                x = layer(x)
                if i in ends:
                    outs.append(x)
            x = m.classifier[1](m.classifier[0](m.avgpool(x).flatten(1)))
            outs.append(x)
            return m.classifier[3](x), outs


@pytest.mark.parametrize("variant", ["small", "large"])
@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_mobilenet_v3_matches_torchvision_and_timm(tmp_path, variant, kind):
    if kind == "timm":
        import timm
        ref = build(timm.create_model, model_name=f"mobilenetv3_{variant}_100", num_classes=CLASSES)
        arch = f"mobilenet_v3_{variant}_timm"
    else:
        ref, arch = build(getattr(tv, f"mobilenet_v3_{variant}"), num_classes=CLASSES), f"mobilenet_v3_{variant}"
    save_file(ref.state_dict(), tmp_path / "m.safetensors")
    weights, meta = convert("torch", tmp_path / "m.safetensors", arch)  # every tensor used, every target set
    x = preprocess(_raw(), meta)
    ref_logits, ref_units = _TorchUnits(ref, variant, kind).units(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    model = load_converted(weights, model_cfg(arch), CLASSES)
    assert_parity(model, x, ref_logits.numpy(), [nhwc(u) for u in ref_units])
