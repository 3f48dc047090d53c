"""Convert a published checkpoint into a weights directory this codebase loads (`config.init = DIR`).

    python -m tl_research.convert resnet50_weights_tf_dim_ordering_tf_kernels.h5 --arch resnet50_keras \\
        --out weights/resnet50_keras
    python -m tl_research.convert resnet50.safetensors --arch resnet50 --out weights/resnet50
    python -m tl_research.convert Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz \\
        --arch vit_ti16 --out weights/vit_ti16

The format (keras | torch | npz) is inferred from the extension (else from the file's first bytes) unless
--format is given. --arch takes a registry name or the family's name (`mobilenet_v2` converts a Keras file as
`mobilenet_v2_keras`) and may be left out when the file's tensors fit one architecture; shape options not
given (MobileNetV2's width, VGG16's fc layers, a ViT's input size) are read from the tensors. One line says
what was inferred. The output is an
orbax checkpoint of the converted arrays plus meta.json (input size, value range, mean/std, interpolation,
crop fraction, source classes, first-conv and classifier names), written by checkpoints.weights.save_weights.

Errors never end in a traceback: a file that is missing, not a checkpoint, truncated or of an unsupported
format is one line; a file that does not fit --arch is a few lines (the first offending tensors of each
kind and their count) and, when the file is one of another registry architecture or width, the --arch and
options that convert it. Exit code 2.
"""
from __future__ import annotations

import argparse
import sys

_MAX = 500  # characters of a library's error message shown


class Refused(Exception):
    """A conversion that cannot go ahead; the message is what the user sees."""


def _parser():
    from tl_research import models
    from tl_research.checkpoints.convert import FORMATS
    p = argparse.ArgumentParser(prog="python -m tl_research.convert", description=__doc__.splitlines()[0])
    p.add_argument("src", help="checkpoint file (.h5, .safetensors, .pth/.pt, .npz)")
    p.add_argument("--arch", default=None, metavar="ARCH",
                   help="registry name of the model, or its family's (mobilenet_v2 for a Keras file converts "
                        "as mobilenet_v2_keras); default: the one architecture the file's tensors fit. One of: "
                        + ", ".join(sorted(models.META)))
    p.add_argument("--out", required=True, help="directory to write the converted weights to")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from the file extension")
    p.add_argument("--fc-units", type=int, default=None,
                   help="vgg*: 0 for a checkpoint without fc6/fc7 ('no top'); default: read from the file")
    p.add_argument("--image-size", type=int, default=None,
                   help="vit_*: the input size the checkpoint's position embedding is laid out for; default: "
                        "read from the file")
    p.add_argument("--width-multiplier", type=float, default=None,
                   help="mobilenet_v2*: the width multiplier (Keras' alpha); default: read from the file")
    return p


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= _MAX else text[:_MAX] + " ..."


def _read(fmt: str, path):
    from tl_research.checkpoints.convert import READERS
    import pathlib
    if not pathlib.Path(path).is_file():
        raise Refused(f"{path}: no such file")
    try:
        return READERS[fmt].read(path)
    except ImportError as e:
        raise Refused(_one_line(e)) from e
    except Exception as e:  # h5py, zipfile, safetensors and pickle each raise their own types
        raise Refused(f"{path} is not a readable {READERS[fmt].NAME} checkpoint (truncated, or another "
                      f"format?): {type(e).__name__}: {_one_line(e)}") from e


def _mismatch(e, fmt: str, source: dict, args) -> str:
    from tl_research.checkpoints import identify
    from tl_research.checkpoints.table import TableMismatch
    if not isinstance(e, TableMismatch):
        return f"{args.src} does not convert to --arch {args.arch}: {_one_line(e)}"
    lines = [f"{args.src} does not convert to --arch {args.arch}: {e.count()} problems"] + e.short()
    found = identify.candidates(fmt, source)
    if found:
        lines.append("this file converts with: " + "; ".join(identify.command_line(a, o) for a, o in found))
    elif e.hint:
        lines.append(f"hint: {e.hint}")
    return "\n".join(lines)


def _arch(fmt: str, source: dict, args) -> tuple[str, dict, list[str]]:
    """(architecture, shape options, what was inferred) for the file: --arch as given, by its family name
    (`mobilenet_v2` on a Keras file), or the one architecture the file fits; the options not given are those
    the file decides (identify.fitting_options)."""
    from tl_research import models
    from tl_research.checkpoints import identify
    from tl_research.checkpoints.convert import READERS
    reader, inferred = READERS[fmt], []
    given = {key: type(models.default_config()[key])(getattr(args, key))
             for key in identify.OPTIONS if getattr(args, key) is not None}
    if args.arch is None:
        found = [(a, o) for a, o in identify.candidates(fmt, source)
                 if all(o.get(k, v) == v for k, v in given.items())]
        if len(found) != 1:
            fits = "; ".join(identify.command_line(a, {**o, **given}) for a, o in found) or "none"
            raise Refused(f"pass --arch: {args.src} fits {len(found)} {reader.NAME} architectures ({fits}); "
                          f"allowed: {', '.join(reader.ARCHS)}")
        arch, options = found[0]
        inferred.append(identify.command_line(arch, {k: v for k, v in options.items() if k not in given}))
        return arch, {**options, **given}, inferred
    if args.arch not in models.META and args.arch not in reader.ARCHS:
        raise Refused(f"unknown --arch {args.arch!r}; allowed: {', '.join(sorted(models.META))}")
    arch = identify.family_arch(fmt, args.arch)
    if arch is None:
        raise Refused(f"no {reader.NAME} converter for --arch {args.arch}; allowed: {', '.join(reader.ARCHS)}")
    if arch != args.arch:
        inferred.append(f"--arch {arch}")
    fits = identify.fitting_options(fmt, source, arch, given)
    options = fits[0] if len(fits) == 1 else given
    inferred += [f"{identify.OPTIONS[k]} {v}" for k, v in options.items() if k not in given]
    return arch, options, inferred


def convert(args) -> int:
    from tl_research import models
    from tl_research.checkpoints.convert import convert_source, infer_format
    from tl_research.checkpoints.weights import CheckpointMismatch, save_weights
    try:
        fmt = args.format or infer_format(args.src)
    except ValueError as e:
        raise Refused(_one_line(e)) from e
    source = _read(fmt, args.src)
    arch, options, inferred = _arch(fmt, source, args)
    if inferred or not args.format:
        print(f"inferred from {args.src}: {' '.join([f'--format {fmt}'] * (not args.format) + inferred)}")
    args.arch = arch
    cfg = models.default_config()
    cfg.name = arch
    cfg.update(options)
    try:
        conversion = convert_source(fmt, source, arch, cfg)
    except CheckpointMismatch as e:
        raise Refused(_mismatch(e, fmt, source, args)) from e
    except ValueError as e:
        raise Refused(f"{args.src}: {_one_line(e)}") from e
    extra = {"converted_from": {"path": str(args.src), "format": fmt, "arch": arch,
                                "fc_units": int(cfg.fc_units), "image_size": int(cfg.image_size),
                                "width_multiplier": float(cfg.width_multiplier)}}
    save_weights(args.out, conversion.weights, conversion.meta, extra=extra)
    print(f"{args.src} ({fmt}) -> {args.out} as {arch}")
    print(conversion.summary())
    m = conversion.meta
    print(f"expects: {m.input_size} input, pixels in {m.value_range}, mean={m.mean}, std={m.std}, "
          f"{m.interpolation} resize, crop {m.crop_pct}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # bad flags: argparse's usage line, exit code 2
    try:
        return convert(args)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
