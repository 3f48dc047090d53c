"""ResNet-50 v2 name tables: big_transfer's BiT `.npz` and keras.applications.ResNet50V2 (see
models/resnet_v2.py for the units). big_vision.py (the `.npz` reader) and keras.py dispatch here.

Target paths: `units.0.conv` stem; `units.S.blocks.B.{norm1,conv1,norm2,conv2,norm3,conv3,proj}` per stage
S = 1..4; the final normalisation `units.4.final_norm`; `head.classifier`.

BiT (`BiT-M-R50x1.npz`, the names big_transfer's bit_jax / bit_pytorch `load_from` and timm's
resnetv2 `_load_weights` read): `resnet/root_block/standardized_conv2d/kernel`,
`resnet/block{S}/unit{BB}/{a,b,c}/{group_norm/{gamma,beta},standardized_conv2d/kernel}`,
`resnet/block{S}/unit01/a/proj/standardized_conv2d/kernel`, `resnet/group_norm/{gamma,beta}` (the final
norm) and `resnet/head/conv2d/{kernel,bias}` (a 1x1 conv classifier). Kernels are HWIO already.

Keras ResNet50V2: `conv1_conv`, `conv{S+1}_block{B}_{preact_bn,0_conv,1_conv,1_bn,2_conv,2_bn,3_conv}`,
`post_bn`, `predictions`.
"""
from __future__ import annotations

from tl_research.checkpoints.table import Table, conv1x1_to_dense
from tl_research.models import resnet_v2

ARCHS_NPZ = ("resnetv2_50x1_bit",)
ARCHS_KERAS = ("resnet50_v2_keras",)
BIT_PREFIX = "resnet/"


def is_bit(source: dict) -> bool:
    return f"{BIT_PREFIX}root_block/standardized_conv2d/kernel" in source


def bit_table() -> Table:
    p, t = BIT_PREFIX, Table()
    t.add(f"{p}root_block/standardized_conv2d/kernel", "units.0.conv.kernel")
    for s, n in enumerate(resnet_v2.STAGES):
        for b in range(n):
            src, dst = f"{p}block{s + 1}/unit{b + 1:02d}", f"units.{s + 1}.blocks.{b}"
            for letter, i in (("a", 1), ("b", 2), ("c", 3)):
                t.add(f"{src}/{letter}/group_norm/gamma", f"{dst}.norm{i}.scale")
                t.add(f"{src}/{letter}/group_norm/beta", f"{dst}.norm{i}.bias")
                t.add(f"{src}/{letter}/standardized_conv2d/kernel", f"{dst}.conv{i}.kernel")
            if b == 0:
                t.add(f"{src}/a/proj/standardized_conv2d/kernel", f"{dst}.proj.kernel")
    last = len(resnet_v2.STAGES)
    t.add(f"{p}group_norm/gamma", f"units.{last}.final_norm.scale")
    t.add(f"{p}group_norm/beta", f"units.{last}.final_norm.bias")
    t.add(f"{p}head/conv2d/kernel", "head.classifier.kernel", conv1x1_to_dense, optional=True)
    t.add(f"{p}head/conv2d/bias", "head.classifier.bias", optional=True)
    return t


def _keras_bn(t: Table, src: str, dst: str) -> None:
    t.add(f"{src}/gamma", f"{dst}.scale")
    t.add(f"{src}/beta", f"{dst}.bias")
    t.add(f"{src}/moving_mean", f"{dst}.mean", collection="batch_stats")
    t.add(f"{src}/moving_variance", f"{dst}.var", collection="batch_stats")


def keras_table() -> Table:
    t = Table()
    t.add("conv1_conv/kernel", "units.0.conv.kernel")
    t.add("conv1_conv/bias", "units.0.conv.bias")
    for s, n in enumerate(resnet_v2.STAGES):
        for b in range(n):
            src, dst = f"conv{s + 2}_block{b + 1}", f"units.{s + 1}.blocks.{b}"
            _keras_bn(t, f"{src}_preact_bn", f"{dst}.norm1")
            if b == 0:
                t.add(f"{src}_0_conv/kernel", f"{dst}.proj.kernel")
                t.add(f"{src}_0_conv/bias", f"{dst}.proj.bias")
            t.add(f"{src}_1_conv/kernel", f"{dst}.conv1.kernel")
            _keras_bn(t, f"{src}_1_bn", f"{dst}.norm2")
            t.add(f"{src}_2_conv/kernel", f"{dst}.conv2.kernel")
            _keras_bn(t, f"{src}_2_bn", f"{dst}.norm3")
            t.add(f"{src}_3_conv/kernel", f"{dst}.conv3.kernel")
            t.add(f"{src}_3_conv/bias", f"{dst}.conv3.bias")
    _keras_bn(t, "post_bn", f"units.{len(resnet_v2.STAGES)}.final_norm")
    t.add("predictions/kernel", "head.classifier.kernel", optional=True)
    t.add("predictions/bias", "head.classifier.bias", optional=True)
    return t
