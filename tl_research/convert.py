"""Convert a published checkpoint into a weights directory this codebase loads (`config.init = DIR`).

    python -m tl_research.convert resnet50_weights_tf_dim_ordering_tf_kernels.h5 --arch resnet50_keras \\
        --out weights/resnet50_keras
    python -m tl_research.convert resnet50.safetensors --arch resnet50 --out weights/resnet50
    python -m tl_research.convert Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz \\
        --arch vit_ti16 --out weights/vit_ti16

The format (keras | torch | npz) is inferred from the extension unless --format is given. The output is an
orbax checkpoint of the converted arrays plus meta.json (input size, value range, mean/std, interpolation,
crop fraction, source classes, first-conv and classifier names), written by checkpoints.weights.save_weights.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from tl_research import models
    from tl_research.checkpoints.convert import FORMATS, infer_format, run
    from tl_research.checkpoints.weights import save_weights

    p = argparse.ArgumentParser(prog="python -m tl_research.convert", description=__doc__.splitlines()[0])
    p.add_argument("src", help="checkpoint file (.h5, .safetensors, .pth/.pt, .npz)")
    p.add_argument("--arch", required=True, choices=sorted(models.META), help="registry name of the model")
    p.add_argument("--out", required=True, help="directory to write the converted weights to")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from the file extension")
    p.add_argument("--fc-units", type=int, default=None,
                   help="vgg*: 0 for a checkpoint without fc6/fc7 ('no top'); default 4096")
    p.add_argument("--image-size", type=int, default=None,
                   help="vit_*: the input size the checkpoint's position embedding is laid out for (default 224)")
    args = p.parse_args(argv)

    fmt = args.format or infer_format(args.src)
    cfg = models.default_config()
    cfg.name = args.arch
    if args.fc_units is not None:
        cfg.fc_units = args.fc_units
    if args.image_size is not None:
        cfg.image_size = args.image_size
    conversion = run(fmt, args.src, args.arch, model_cfg=cfg)
    extra = {"converted_from": {"path": str(args.src), "format": fmt, "arch": args.arch,
                                "fc_units": int(cfg.fc_units), "image_size": int(cfg.image_size)}}
    save_weights(args.out, conversion.weights, conversion.meta, extra=extra)
    print(f"{args.src} ({fmt}) -> {args.out} as {args.arch}")
    print(conversion.summary())
    m = conversion.meta
    print(f"expects: {m.input_size} input, pixels in {m.value_range}, mean={m.mean}, std={m.std}, "
          f"{m.interpolation} resize, crop {m.crop_pct}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
