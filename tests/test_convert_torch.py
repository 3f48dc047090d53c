"""PyTorch state dicts (torchvision / timm names) -> Flax: logits and every depth unit match torchvision
0.28.0's and timm's own models (random weights, random BatchNorm statistics), from .safetensors and .pth
files; errors name the offending tensors."""
from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from real_torchvision import build, models as tv, nhwc, randomize_, resnet_units  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from tl_research.checkpoints import torch as torch_ckpt  # noqa: E402
from tl_research.checkpoints.convert import convert, run  # noqa: E402
from tl_research.checkpoints.weights import CheckpointMismatch, transfer  # noqa: E402
from tl_research.models.base import set_unit_mode  # noqa: E402
from test_convert_common import (assert_parity, load_converted, model_cfg, preprocess, rel_err,  # noqa: E402
                                 zeros_model)

CLASSES = 7


def _raw(size=32, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype(np.float32)


def _parity(units, path, arch, raw, **cfg):
    """Converts `path`, checks the metadata's preprocessing reproduces the reference's, and compares with
    `units(x)`: (the PyTorch model's logits, [each depth unit's output])."""
    conversion = run("torch", path, arch, model_cfg=model_cfg(arch, **cfg))
    assert conversion.meta.num_classes == CLASSES
    x = preprocess(raw, conversion.meta)
    ref_logits, ref_units = units(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    model = load_converted(conversion.weights, model_cfg(arch, **cfg), CLASSES)
    assert_parity(model, x, ref_logits.numpy(), [nhwc(u) for u in ref_units])
    return conversion


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    ref = build(tv.resnet18, seed=3, num_classes=CLASSES)  # torchvision 0.28.0's own model code
    path = tmp_path_factory.mktemp("r18") / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def test_resnet50_safetensors_matches_torchvision(tmp_path):
    ref = build(tv.resnet50, num_classes=CLASSES)
    save_file(ref.state_dict(), tmp_path / "resnet50.safetensors")
    _parity(lambda x: resnet_units(ref, x), tmp_path / "resnet50.safetensors", "resnet50", _raw())


def test_resnet18_pth_matches_torchvision(resnet18_file):
    ref, path = resnet18_file
    _parity(lambda x: resnet_units(ref, x), path, "resnet18", _raw())


def _vgg_units(model, x):
    """(logits, [each conv block up to its max-pool, fc6 + fc7]) of torchvision's VGG."""
    outs = []
    with torch.no_grad():
        h = x
        for layer in model.features:
            h = layer(h)
            if isinstance(layer, torch.nn.MaxPool2d):
                outs.append(h)
        outs.append(model.classifier[:6](torch.flatten(model.avgpool(h), 1)))
        return model(x), outs


def test_vgg16_with_fc_layers_matches_torchvision(tmp_path):
    # torchvision's vgg16 with fc6/fc7 narrowed to 64 units to keep the file small (its Linear layers
    # replaced; the model's own forward runs); fc6 still reads the full 7x7x512 pooled map (adaptive pooling
    # from 1x1 at 32px input), so the (C,H,W) -> (H,W,C) row permutation is exercised.
    def vgg16_narrow(num_classes):
        m = tv.vgg16(num_classes=num_classes, init_weights=False)
        for i, (c_in, c_out) in zip((0, 3, 6), ((512 * 7 * 7, 64), (64, 64), (64, num_classes))):
            m.classifier[i] = torch.nn.Linear(c_in, c_out)
        return m
    ref = build(vgg16_narrow, num_classes=CLASSES)
    save_file(ref.state_dict(), tmp_path / "vgg16.safetensors")
    _parity(lambda x: _vgg_units(ref, x), tmp_path / "vgg16.safetensors", "vgg16", _raw(), fc_units=64)


def test_vgg16_fc_permutation_at_224_grid():
    # A non-trivial 7x7 map: position (h, w, c) must meet the torch weight column c*49 + h*7 + w.
    w = np.arange(3 * 512 * 49, dtype=np.float32).reshape(3, 512 * 49)
    k = torch_ckpt._fc6_chw_to_hwc(w)
    h, wi, c = 2, 5, 300
    assert np.array_equal(k[(h * 7 + wi) * 512 + c], w[:, c * 49 + h * 7 + wi])


def _features_units(model, x, blocks=lambda layer: [layer]):
    """(logits, [the output of each of `blocks(layer)` for the layers of `model.features`]): MobileNetV2's
    units are its `features`; EfficientNet's split its stages into their blocks."""
    outs = []
    with torch.no_grad():
        h = x
        for layer in model.features:
            for block in blocks(layer):
                h = block(h)
                outs.append(h)
        return model(x), outs


def test_mobilenet_v2_matches_torchvision(tmp_path):
    ref = randomize_(tv.mobilenet_v2(num_classes=CLASSES))  # torchvision 0.28.0's own model code
    save_file(ref.state_dict(), tmp_path / "mobilenet_v2.safetensors")
    _parity(lambda x: _features_units(ref, x), tmp_path / "mobilenet_v2.safetensors", "mobilenet_v2", _raw())


def _timm_efficientnet_units(model, x):
    """(logits, [stem, each block, conv_head + bn2]) of timm's EfficientNet."""
    with torch.no_grad():
        h = model.bn1(model.conv_stem(x))  # timm's BatchNormAct2d applies the SiLU
        outs = [h]
        for stage in model.blocks:
            for block in stage:
                h = block(h)
                outs.append(h)
        outs.append(model.bn2(model.conv_head(h)))
        return model(x), outs


def test_efficientnet_b0_matches_torchvision_and_timm(tmp_path):
    ref = build(tv.efficientnet_b0, num_classes=CLASSES)
    save_file(ref.state_dict(), tmp_path / "tv.safetensors")
    from torchvision.models.efficientnet import MBConv
    stages = lambda layer: list(layer) if isinstance(layer[0], MBConv) else [layer]  # a stage: its blocks
    _parity(lambda x: _features_units(ref, x, stages), tmp_path / "tv.safetensors", "efficientnet_b0", _raw())
    import timm
    ref = build(timm.create_model, seed=1, model_name="efficientnet_b0", num_classes=CLASSES)
    save_file(ref.state_dict(), tmp_path / "timm.safetensors")  # timm/efficientnet_b0.ra_in1k's names
    conversion = _parity(lambda x: _timm_efficientnet_units(ref, x), tmp_path / "timm.safetensors",
                         "efficientnet_b0", _raw())
    assert "timm parameter names" in conversion.summary()


@pytest.mark.parametrize("depth", [34, 101, 152])
def test_resnet_tables_cover_every_torchvision_tensor(depth):
    # Shapes only (meta device: nothing allocated); ResNet-18/50 above check the numbers.
    with torch.device("meta"):
        sd = getattr(tv, f"resnet{depth}")().state_dict()
    table = torch_ckpt.resnet_table(depth)
    sources = {r.source for r in table.rows}
    assert sources == {k for k in sd if not k.endswith("num_batches_tracked")}
    assert set(table.set_aside) == {k for k in sd if k.endswith("num_batches_tracked")}
    if depth == 34:  # the basic-block table against the Flax model's own shapes
        from tl_research.checkpoints.convert import target_shapes
        target = target_shapes("resnet34", num_classes=1000)
        for r in table.rows:
            shape = r.transform(np.broadcast_to(np.float32(0), tuple(sd[r.source].shape))).shape
            assert target[r.collection][r.target] == shape, r


def test_extra_and_missing_tensors_are_named(resnet18_file, tmp_path):
    ref, _ = resnet18_file
    sd = dict(ref.state_dict())
    save_file({**sd, "layer5.0.conv1.weight": torch.zeros(3, 3, 1, 1)}, tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"not map: layer5\.0\.conv1\.weight"):
        convert("torch", tmp_path / "extra.safetensors", "resnet18")
    del sd["layer2.0.bn1.running_var"]
    save_file(sd, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"missing from the checkpoint: layer2\.0\.bn1\.running_var"):
        convert("torch", tmp_path / "missing.safetensors", "resnet18")
    sd = {k: v for k, v in ref.state_dict().items() if k != "fc.bias"}  # a head is all or nothing
    save_file(sd, tmp_path / "half_head.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"missing from the checkpoint: fc\.bias"):
        convert("torch", tmp_path / "half_head.safetensors", "resnet18")
    sd = dict(ref.state_dict())
    sd["layer3.1.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    save_file(sd, tmp_path / "shape.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"shape mismatch: layer3\.1\.conv2\.weight"):
        convert("torch", tmp_path / "shape.safetensors", "resnet18")


class _Payload:
    """Unpickling this would create a file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_pth_with_arbitrary_objects_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "hook": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only"):
        convert("torch", tmp_path / "evil.pth", "resnet18")
    assert not marker.exists()


def test_training_checkpoint_wrapping_and_dataparallel_prefix_are_unwrapped(resnet18_file, tmp_path):
    ref, path = resnet18_file
    wrapped = {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 90}
    torch.save(wrapped, tmp_path / "ckpt.pth.tar.pt")
    w1, _ = convert("torch", tmp_path / "ckpt.pth.tar.pt", "resnet18")
    w2, _ = convert("torch", path, "resnet18")
    np.testing.assert_array_equal(w1["params"]["units.8.conv2.kernel"], w2["params"]["units.8.conv2.kernel"])


def test_pth_without_torch_says_how_to_convert_to_safetensors(monkeypatch, tmp_path):
    (tmp_path / "m.pth").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match="safetensors"):
        torch_ckpt.read(tmp_path / "m.pth")


def test_other_class_count_reinitialises_the_head_and_reports_it(resnet18_file):
    _, path = resnet18_file
    weights, meta = convert("torch", path, "resnet18")
    model = zeros_model(model_cfg("resnet18"), num_classes=10)
    report = transfer(model, weights)
    assert report.head_reinitialised == ["head.classifier.bias", "head.classifier.kernel"]
    assert "head re-initialised" in report.summary()
    assert len(report.loaded) == len(weights["params"]) + len(weights["batch_stats"]) - 2
    assert model.head.classifier.kernel.shape == (512, 10) and not np.any(model.head.classifier.kernel[...])
    with pytest.raises(CheckpointMismatch, match=r"head\.classifier\.kernel checkpoint \(512, 7\)"):
        transfer(zeros_model(model_cfg("resnet18"), num_classes=10), weights, reinit_head=False)


def test_grayscale_model_gets_the_first_conv_summed_over_rgb(resnet18_file):
    ref, path = resnet18_file
    weights, meta = convert("torch", path, "resnet18")
    gray = zeros_model(model_cfg("resnet18"), num_classes=CLASSES, in_channels=1)
    report = transfer(gray, weights)
    assert report.adapted == ["units.0.conv.kernel 3->1 input channels"]
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 1)).astype(np.float32)
    _, ref_units = resnet_units(ref, torch.from_numpy(np.repeat(x, 3, axis=3).transpose(0, 3, 1, 2)))
    # A grey image is equal R, G and B: the summed kernel must give the RGB network's stem output.
    stem = gray.units[0]
    set_unit_mode(stem, train=False)
    assert rel_err(stem(x), nhwc(ref_units[0])) < 1e-5


def test_zip_pth_reads_without_torch_as_torch_load_reads_it(tmp_path, monkeypatch):
    """The zip format of torch.save read by checkpoints.torch_zip: every dtype, views into a larger storage
    (offset and strides), shared storages, scalars and empty tensors equal torch.load's, with torch absent."""
    from tl_research.checkpoints import torch_zip
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    saved = {"f32": torch.randn(3, 4, generator=g), "f64": torch.randn(5, generator=g, dtype=torch.float64),
             "f16": torch.randn(2, 3, generator=g).half(), "bf16": torch.randn(4, 2, generator=g).bfloat16(),
             "i64": torch.tensor(7), "i32": torch.arange(6, dtype=torch.int32), "u8": torch.arange(5).byte(),
             "i8": torch.arange(-3, 3, dtype=torch.int8), "bool": torch.tensor([True, False, True]),
             "view_t": base.t(), "view_slice": base[2:5, 1::3], "same_base": base, "empty": torch.zeros(0, 3),
             "param": torch.nn.Parameter(torch.randn(2, 2, generator=g))}
    torch.save({"state_dict": saved, "epoch": 3, "names": ["a", "b"]}, tmp_path / "m.pth")
    want = torch.load(tmp_path / "m.pth", weights_only=True)["state_dict"]
    monkeypatch.setitem(sys.modules, "torch", None)  # the reader must not need PyTorch
    got = torch_zip.load(tmp_path / "m.pth")
    assert got["epoch"] == 3 and got["names"] == ["a", "b"]
    for k, v in want.items():
        ref = v.detach().float().numpy() if v.dtype in (torch.bfloat16, torch.float16) else v.detach().numpy()
        arr = got["state_dict"][k].astype(np.float32) if k in ("bf16", "f16") else got["state_dict"][k]
        assert arr.shape == ref.shape and arr.dtype == ref.dtype, k
        np.testing.assert_array_equal(arr, ref, err_msg=k)
    read = torch_ckpt.read(tmp_path / "m.pth")  # unwrapped, float16 widened as for safetensors
    assert read["f16"].dtype == np.float32 and read["bf16"].dtype == np.float32


def test_resnet18_pth_converts_without_torch_as_its_safetensors_twin(resnet18_file, tmp_path, monkeypatch):
    ref, path = resnet18_file
    save_file(ref.state_dict(), tmp_path / "twin.safetensors")
    twin, _ = convert("torch", tmp_path / "twin.safetensors", "resnet18")
    monkeypatch.setitem(sys.modules, "torch", None)
    without, _ = convert("torch", path, "resnet18")
    assert set(without["params"]) == set(twin["params"]) and len(twin["params"]) > 40
    for coll in twin:
        for k, v in twin[coll].items():
            np.testing.assert_array_equal(without[coll][k], v, err_msg=k)


def test_convert_command_reads_the_format_and_the_architecture_from_the_file(resnet18_file, tmp_path, capsys):
    import shutil
    from tl_research.cli.convert import main
    _, path = resnet18_file
    odd = tmp_path / "weights.ckpt"  # an extension that names no format: the zip archive's contents do
    shutil.copy(path, odd)
    assert main([str(odd), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"inferred from {odd}: --format torch --arch resnet18"
    assert main([str(path), "--arch", "resnet9000", "--out", str(tmp_path / "o3")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown --arch 'resnet9000'; allowed: ")
