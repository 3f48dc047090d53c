"""big_vision / AugReg ViT .npz -> Flax: the real ViT-Ti/16 structure (width 192, 12 blocks, 3 heads) at 32px
against a plain numpy forward pass written from the checkpoint's own arrays."""
from __future__ import annotations

import numpy as np
import pytest

from tl_research.checkpoints.convert import convert, run
from tl_research.checkpoints.weights import CheckpointMismatch, transfer
from test_convert_common import assert_parity, augreg_vit_npz, load_converted, model_cfg, run_units, zeros_model

TI = dict(width=192, depth=12, heads=3, mlp=768)
CLASSES = 5


def _ln(x, scale, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _gelu_tanh(x):  # flax.linen.gelu, the default (approximate) form the checkpoints were trained with
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def reference_vit(p, x, depth):
    """(logits, [embedding, block_0 .. block_{depth-1}, final norm]) in float64, AugReg names."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    n, size = x.shape[0], x.shape[1]
    g = size // 16
    patches = x.reshape(n, g, 16, g, 16, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, g * g, 16 * 16 * 3)
    tokens = patches @ p["embedding/kernel"].reshape(-1, p["embedding/kernel"].shape[-1]) + p["embedding/bias"]
    h = np.concatenate([np.broadcast_to(p["cls"], (n, 1, tokens.shape[-1])), tokens], axis=1)
    h = h + p["Transformer/posembed_input/pos_embedding"]
    outs = [h]
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}"
        a = f"{b}/MultiHeadDotProductAttention_1"
        y = _ln(h, p[f"{b}/LayerNorm_0/scale"], p[f"{b}/LayerNorm_0/bias"])
        q, k, v = (np.einsum("ntd,dhk->nthk", y, p[f"{a}/{s}/kernel"]) + p[f"{a}/{s}/bias"]
                   for s in ("query", "key", "value"))
        logits = np.einsum("nqhk,nthk->nhqt", q, k) / np.sqrt(q.shape[-1])
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        o = np.einsum("nhqt,nthk->nqhk", w, v)
        h = h + np.einsum("nqhk,hkd->nqd", o, p[f"{a}/out/kernel"]) + p[f"{a}/out/bias"]
        y = _ln(h, p[f"{b}/LayerNorm_2/scale"], p[f"{b}/LayerNorm_2/bias"])
        m = f"{b}/MlpBlock_3"
        y = _gelu_tanh(y @ p[f"{m}/Dense_0/kernel"] + p[f"{m}/Dense_0/bias"])
        h = h + y @ p[f"{m}/Dense_1/kernel"] + p[f"{m}/Dense_1/bias"]
        outs.append(h)
    h = _ln(h, p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"])
    outs.append(h)
    return h[:, 0] @ p["head/kernel"] + p["head/bias"], outs


@pytest.fixture(scope="module")
def augreg_ti(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit") / "Ti_16-i21k.npz"
    return path, augreg_vit_npz(path, grid=2, num_classes=CLASSES, **TI)


def test_vit_ti16_matches_a_numpy_forward_of_the_checkpoint(augreg_ti):
    path, p = augreg_ti
    cfg = model_cfg("vit_ti16", image_size=32)
    weights, meta = convert("npz", path, "vit_ti16", model_cfg=cfg)
    assert meta.mean == meta.std == (0.5, 0.5, 0.5) and meta.num_classes == CLASSES
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    ref_logits, ref_units = reference_vit(p, x, TI["depth"])
    model = load_converted(weights, cfg, CLASSES)
    assert model.num_units == 14
    assert_parity(model, x, ref_logits, ref_units)
    # Another input size resamples the 2x2 position grid at run time (here to 4x4).
    logits, units = run_units(model, np.zeros((1, 64, 64, 3), np.float32))
    assert units[0].shape == (1, 17, 192) and logits.shape == (1, CLASSES) and np.all(np.isfinite(logits))


def test_todays_big_vision_names_and_pre_logits(augreg_ti, tmp_path):
    path, p = augreg_ti
    cfg = model_cfg("vit_ti16", image_size=32)
    expected, _ = convert("npz", path, "vit_ti16", model_cfg=cfg)
    # big_vision's models/vit.py: per-type module numbers, top-level posemb over the patches only (added
    # before the class token), a params/ prefix; plus a pre_logits layer.
    rename = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
              "MlpBlock_3": "MlpBlock_0"}
    new = {}
    for k, v in p.items():
        parts = k.split("/")
        parts = [rename.get(s, s) for s in parts]
        new["params/" + "/".join(parts)] = v
    pos = new.pop("params/Transformer/posembed_input/pos_embedding")
    new["params/pos_embedding"] = pos[:, 1:]
    new["params/cls"] = p["cls"] + pos[:, :1]  # the same network: the class token absorbs its posemb
    new["params/pre_logits/kernel"] = np.zeros((192, 192), np.float32)
    new["params/pre_logits/bias"] = np.zeros((192,), np.float32)
    np.savez(tmp_path / "bv.npz", **new)
    c = run("npz", tmp_path / "bv.npz", "vit_ti16", model_cfg=cfg)
    # pre_logits and the classifier reading it are set aside together; the head starts fresh.
    assert set(c.set_aside) == {"pre_logits/kernel", "pre_logits/bias", "head/kernel", "head/bias"}
    assert c.no_classifier and "pre_logits" in c.summary()
    assert c.weights["params"].keys() == expected["params"].keys() - {"head.classifier.kernel",
                                                                      "head.classifier.bias"}
    model = zeros_model(cfg, CLASSES)
    transfer(model, c.weights)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    _, a = run_units(load_converted(expected, cfg, CLASSES), x)
    _, b = run_units(model, x)
    for ua, ub in zip(a, b):
        np.testing.assert_allclose(ua, ub, rtol=1e-5, atol=1e-5)


def test_missing_and_extra_tensors_and_posemb_grid_are_named(augreg_ti, tmp_path):
    path, p = augreg_ti
    cfg = model_cfg("vit_ti16", image_size=32)
    q = {k: v for k, v in p.items() if k != "Transformer/encoderblock_7/LayerNorm_2/bias"}
    np.savez(tmp_path / "missing.npz", **q, **{"Transformer/encoderblock_12/LayerNorm_0/scale": np.ones(192)})
    with pytest.raises(CheckpointMismatch) as e:
        convert("npz", tmp_path / "missing.npz", "vit_ti16", model_cfg=cfg)
    assert "encoderblock_7/LayerNorm_2/bias" in str(e.value) and "encoderblock_12/LayerNorm_0/scale" in str(e.value)
    with pytest.raises(CheckpointMismatch, match="model.image_size=32"):
        convert("npz", path, "vit_ti16")  # default image_size 224: a 14x14 grid


def vit_train_losses(steps: int = 3) -> list[float]:
    """Train-step losses of a random ViT-Ti/16 (32px) on a fixed batch of 16, under the trainer's mesh over
    every device (run in this process and in one with 8 simulated devices)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P

    from tl_research import config as C

    from tl_research.finetune import freezing

    from tl_research.run import setup, steps as steps_lib
    from tl_research.tasks.classification import task as classification
    rng = np.random.default_rng(0)
    graphdef, state = nnx.split(zeros_model(model_cfg("vit_ti16", image_size=32), CLASSES))
    state = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.05, a.shape).astype(a.dtype)), state)
    graphdef, pp, sp, params, stats = steps_lib.split_model(nnx.merge(graphdef, state))
    mesh = setup.mesh()
    opt = C.base_config().optimizer
    tx, train = steps_lib.build_train(steps_lib.TrainSpec(
        net=steps_lib.Net(graphdef, pp, sp), frozen_depth=0, labels=freezing.labels(list(params), 0), optimizer=opt,
        objective=classification.Objective(CLASSES), value_range=(0.0, 1.0), mean=np.zeros(3, np.float32),
        std=np.ones(3, np.float32), mesh=mesh))
    data = NamedSharding(mesh, P("data"))
    batch = steps_lib.to_device({"image": rng.integers(0, 255, (16, 32, 32, 3), np.uint8),
                                   "label": rng.integers(0, CLASSES, 16).astype(np.int32)}, data)
    assert len(batch["image"].sharding.device_set) == jax.device_count()
    state = jax.device_put({"params": params, "batch_stats": stats, "opt_state": tx.init(params),
                            "step": jnp.zeros((), jnp.int32), "key": jax.random.key_data(jax.random.key(0))},
                           NamedSharding(mesh, P()))
    hp = {"lr": np.float32(0.05), "momentum": np.float32(0.9), "class_weights": np.ones(CLASSES, np.float32)}
    losses = []
    for _ in range(steps):
        state, m = train(state, batch, hp, {})
        losses.append(float(m["loss"]))
    return losses


@pytest.mark.long  # a ViT compiled for 8 devices and for one: about 20 s (FSDP on 8 devices stays in the suite)
def test_vit_train_steps_on_eight_devices_match_one_device():
    # The trainer's data-parallel mesh (Auto axes) over 8 simulated devices: the batch split over them, the
    # parameters replicated; the ViT's steps must give the single-device losses.
    import json
    import os
    import pathlib
    import subprocess
    import sys
    import jax
    tests = pathlib.Path(__file__).resolve().parent
    script = (f"import json, sys; sys.path[:0] = [{str(tests.parent)!r}, {str(tests)!r}]\n"
              "import jax; from test_convert_big_vision import vit_train_losses\n"
              "print(json.dumps([jax.device_count(), vit_train_losses()]))")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # runs while this process compiles
    assert jax.device_count() == 1
    one = vit_train_losses()
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-2000:]
    devices, eight = json.loads(out.strip().splitlines()[-1])
    assert devices == 8
    assert len(set(one)) == 3  # the steps train: each loss differs
    np.testing.assert_allclose(eight, one, rtol=1e-5, atol=1e-6)


def test_vit_class_token_takes_the_batch_sharding_under_explicit_axes():
    # The trainer's mesh uses Auto axes; under an Explicit-axes mesh (jax.make_mesh's default) a replicated
    # class token cannot be concatenated to batch-sharded patches, so the embedding broadcasts it with the
    # batch's sharding. Tracing is enough to tell.
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    from tl_research import models
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Explicit,))
    graphdef, state = nnx.split(models.abstract(model_cfg("vit_ti16", image_size=32), CLASSES, 3))
    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, P())), state)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    embed = jax.jit(lambda state, x: nnx.merge(graphdef, state).units[0](x))
    tokens = embed.trace(state, x).out_info
    assert tokens.shape == (2, 1 + 2 * 2, 192)
    assert tokens.sharding.spec[0] == "data"


def todays_big_vision(p: dict, depth: int, *, scan: bool) -> dict:
    """An AugReg-named checkpoint in today's big_vision layout (per-type module numbers, a `params/` prefix,
    a top-level position embedding over the patches only); with `scan`, the blocks stacked on a leading
    axis under `Transformer/encoderblock/` as nn.scan saves them."""
    rename = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
              "MlpBlock_3": "MlpBlock_0"}
    out, blocks = {}, {}
    for k, v in p.items():
        parts = [rename.get(s, s) for s in k.split("/")]
        if scan and parts[0] == "Transformer" and parts[1].startswith("encoderblock_"):
            blocks.setdefault("/".join(parts[2:]), {})[int(parts[1].split("_")[1])] = v
        else:
            out["params/" + "/".join(parts)] = v
    for name, per_block in blocks.items():
        assert sorted(per_block) == list(range(depth))
        out[f"params/Transformer/encoderblock/{name}"] = np.stack([per_block[i] for i in range(depth)])
    pos = out.pop("params/Transformer/posembed_input/pos_embedding")
    out["params/pos_embedding"] = pos[:, 1:]
    out["params/cls"] = p["cls"] + pos[:, :1]  # the same network: the class token absorbs its posemb
    return out


VIT = {"vit_s16": dict(width=384, depth=12, heads=6, mlp=1536),
       "vit_b16": dict(width=768, depth=12, heads=12, mlp=3072)}


@pytest.mark.parametrize("arch,scan", [("vit_s16", True), ("vit_b16", False)])
def test_vit_s16_and_b16_match_a_numpy_forward_in_either_block_layout(arch, scan, tmp_path, capsys):
    # The full models, all 12 blocks (ViT-B/16: 86M random weights, two 344 MB files, at 32 px).
    dims = VIT[arch]
    p = augreg_vit_npz(tmp_path / "augreg.npz", grid=2, num_classes=CLASSES, seed=3, **dims)
    np.savez(tmp_path / "bv.npz", **todays_big_vision(p, dims["depth"], scan=scan))
    cfg = model_cfg(arch, image_size=32)
    weights, _ = convert("npz", tmp_path / "bv.npz", arch, model_cfg=cfg)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    ref_logits, ref_units = reference_vit(p, x, dims["depth"])
    model = load_converted(weights, cfg, CLASSES)
    assert model.num_units == dims["depth"] + 2
    assert_parity(model, x, ref_logits, ref_units)
    if arch == "vit_s16":  # given as another ViT, the file is recognised
        from tl_research.cli.convert import main
        assert main([str(tmp_path / "bv.npz"), "--arch", "vit_b16", "--out", str(tmp_path / "o")]) == 2
        assert capsys.readouterr().err.rstrip().endswith(
            "this file converts with: --arch vit_s16 --image-size 32")
