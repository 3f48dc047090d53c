"""The conversion entry points (format inference, `config.init` parsing, the CLI) and the Flax-side helpers
the per-format parity tests share (test_convert_keras/torch/big_vision import them from here)."""
from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tl_research import models
from tl_research.checkpoints import convert as conv
from tl_research.checkpoints.weights import load_weights, transfer

TOL = 1e-4  # relative error allowed in float32: max |flax - reference| / max |reference|


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def model_cfg(arch: str, **overrides):
    cfg = models.default_config()
    cfg.name = arch
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def zeros_model(cfg, num_classes: int, in_channels: int = 3):
    """The registry model with every array zero: built abstractly, so no initializer is compiled (random
    initialisation costs seconds per distinct shape on CPU). Loading then goes through `transfer`."""
    abstract = conv.abstract_model(cfg.name, cfg, num_classes=num_classes, in_channels=in_channels)
    graphdef, state = nnx.split(abstract)
    # device_put: jnp.asarray of a numpy array compiles one copy per distinct shape (JAX 0.10)
    state = jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), state)
    return nnx.merge(graphdef, state)


@functools.lru_cache(maxsize=None)
def _forward(graphdef):
    # Optimisation level 0 compiles a ResNet-50 about twice as fast on CPU; the arithmetic is the same.
    return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, return_units=True),
                   compiler_options={"xla_backend_optimization_level": 0})


def run_units(model, x: np.ndarray):
    """(logits, [every depth unit's output]) of a Flax model in inference mode."""
    graphdef, state = nnx.split(model)
    logits, units = _forward(graphdef)(state, jnp.asarray(x, jnp.float32))
    return np.asarray(logits), [np.asarray(u) for u in units]


def load_converted(weights, cfg, num_classes: int):
    """A model holding the converted weights, source classifier included (to compare logits)."""
    model = zeros_model(cfg, num_classes)
    report = transfer(model, weights, reinit_head=False)
    assert not report.adapted and not report.head_reinitialised
    return model


def preprocess(raw: np.ndarray, meta) -> np.ndarray:
    """0..255 RGB pixels -> the converted network's input, as the metadata prescribes."""
    lo, hi = meta.value_range
    x = raw / 255.0 * (hi - lo) + lo
    return ((x - np.asarray(meta.mean)) / np.asarray(meta.std)).astype(np.float32)


def assert_parity(model, x, ref_logits, ref_units, *, check_logits: bool = True):
    logits, units = run_units(model, x)
    assert len(units) == len(ref_units) == model.num_units
    errors = [rel_err(u, r) for u, r in zip(units, ref_units)]
    assert max(errors) < TOL, [f"unit {i}: {e:.1e}" for i, e in enumerate(errors) if e >= TOL]
    if check_logits:
        assert rel_err(logits, ref_logits) < TOL


# --- a big_vision ViT checkpoint with random weights (shared with test_convert_big_vision) ----------------------

def augreg_vit_npz(path, *, width, depth, heads, mlp, grid, num_classes, seed=0, pre_logits=False):
    """A random ViT in the AugReg npz layout; returns the {key: array} it wrote."""
    rng = np.random.default_rng(seed)
    dense = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
    small = lambda *shape: (0.1 * rng.standard_normal(shape)).astype(np.float32)
    p = {"embedding/kernel": (rng.standard_normal((16, 16, 3, width)) / np.sqrt(768)).astype(np.float32),
         "embedding/bias": small(width), "cls": small(1, 1, width),
         "Transformer/posembed_input/pos_embedding": small(1, 1 + grid * grid, width)}
    hd = width // heads
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            p[f"{b}/{ln}/scale"] = (0.5 + rng.random(width)).astype(np.float32)
            p[f"{b}/{ln}/bias"] = small(width)
        a = f"{b}/MultiHeadDotProductAttention_1"
        for proj in ("query", "key", "value"):
            p[f"{a}/{proj}/kernel"] = dense(width, heads, hd)
            p[f"{a}/{proj}/bias"] = small(heads, hd)
        p[f"{a}/out/kernel"] = (rng.standard_normal((heads, hd, width)) / np.sqrt(width)).astype(np.float32)
        p[f"{a}/out/bias"] = small(width)
        p[f"{b}/MlpBlock_3/Dense_0/kernel"] = dense(width, mlp)
        p[f"{b}/MlpBlock_3/Dense_0/bias"] = small(mlp)
        p[f"{b}/MlpBlock_3/Dense_1/kernel"] = dense(mlp, width)
        p[f"{b}/MlpBlock_3/Dense_1/bias"] = small(width)
    p["Transformer/encoder_norm/scale"] = (0.5 + rng.random(width)).astype(np.float32)
    p["Transformer/encoder_norm/bias"] = small(width)
    if pre_logits:
        p["pre_logits/kernel"], p["pre_logits/bias"] = dense(width, width), small(width)
    p["head/kernel"], p["head/bias"] = dense(width, num_classes), small(num_classes)
    np.savez(path, **p)
    return p


# --- entry points ---------------------------------------------------------------------------------------------

def test_format_is_inferred_from_the_extension_and_init_strings_parse():
    assert conv.infer_format("a/resnet50_notop.h5") == "keras"
    assert conv.infer_format("m.safetensors") == "torch"
    assert conv.infer_format("m.pth") == "torch"
    assert conv.infer_format("Ti_16.npz") == "npz"
    with pytest.raises(ValueError, match="keras, torch, npz"):
        conv.infer_format("weights.ckpt")
    assert conv.parse_init("keras:/w/x.h5") == ("keras", "/w/x.h5")
    assert conv.parse_init("npz:gs_copy/Ti_16.npz") == ("npz", "gs_copy/Ti_16.npz")
    assert conv.parse_init("runs/converted_dir") is None


def test_unknown_architecture_and_format_are_refused_with_the_allowed_values(tmp_path):
    f = tmp_path / "x.npz"
    np.savez(f, cls=np.zeros((1, 1, 4), np.float32))
    with pytest.raises(ValueError, match="resnet50_keras"):
        conv.convert("npz", f, "resnet_cifar")
    with pytest.raises(ValueError, match="keras, torch, npz"):
        conv.convert("onnx", f, "vit_ti16")
    with pytest.raises(ValueError, match="no Keras converter"):
        conv.convert("keras", f, "vit_ti16")


def test_every_registered_imagenet_model_has_metadata():
    for name, meta in models.META.items():
        assert name in models.names()
        assert meta.first_conv.startswith("units.0") and meta.classifier == "head.classifier"
        size = 299 if name.startswith("inception") else 224  # Inception-v3 is published at 299 px
        assert meta.input_size == (size, size, 3) and len(meta.mean) == len(meta.std) == 3
        assert meta.source and meta.license


def test_cli_writes_a_weights_dir_with_metadata(tmp_path, capsys):
    from tl_research.cli.convert import main
    src = tmp_path / "Ti_16.npz"
    augreg_vit_npz(src, width=192, depth=12, heads=3, mlp=768, grid=2, num_classes=5)
    out = tmp_path / "converted"
    assert main([str(src), "--arch", "vit_ti16", "--out", str(out), "--image-size", "32"]) == 0
    printed = capsys.readouterr().out
    assert "tensors converted" in printed and "source classifier: 5 classes" in printed
    assert "not loaded" not in printed  # nothing to set aside in this file
    weights, meta = load_weights(out)
    assert meta.num_classes == 5 and meta.mean == (0.5, 0.5, 0.5) and meta.first_conv == "units.0.patch"
    assert weights["params"]["units.0.pos_embed"].shape == (1, 5, 192)
    assert weights["params"]["units.13.norm.scale"].shape == (192,)
    info = json.loads((out / "meta.json").read_text())
    assert info["converted_from"]["format"] == "npz" and info["converted_from"]["image_size"] == 32


def test_cli_refuses_unreadable_files_in_one_line_with_exit_code_2(tmp_path, capsys):
    from tl_research.cli.convert import main
    good = tmp_path / "Ti_16.npz"
    augreg_vit_npz(good, width=192, depth=1, heads=3, mlp=8, grid=1, num_classes=2)
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:4000])  # an interrupted download
    (tmp_path / "page.h5").write_bytes(b"<html>403 Forbidden</html>")  # a saved error page
    cases = {"cut.npz": ("vit_ti16", "not a readable big_vision checkpoint"),
             "page.h5": ("resnet50_keras", "not a readable Keras checkpoint"),
             "w.onnx": ("vit_ti16", "cannot tell the format"), "absent.pth": ("resnet18", "no such file")}
    (tmp_path / "w.onnx").write_bytes(b"\0")
    for name, (arch, says) in cases.items():
        assert main([str(tmp_path / name), "--arch", arch, "--out", str(tmp_path / "o")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert main([str(good), "--arch", "resnet18", "--format", "npz", "--out", str(tmp_path / "o")]) == 2
    assert "no big_vision converter for --arch resnet18" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
