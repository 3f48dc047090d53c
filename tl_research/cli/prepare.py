"""Prepare a dataset for this codebase: TFDS's array_record files, which runs read without TensorFlow.

    python -m tl_research.prepare food101 [--data_dir D]        # any TFDS name (name[/config][:version])
    python -m tl_research.prepare imagenet2012 [--manual_dir M]  # downloaded by hand first (see below)
    python -m tl_research.prepare coco --config 2017             # --config / --version as TFDS names them
    python -m tl_research.prepare vtab:cifar100                  # a VTAB-1k task's TFDS dataset
    python -m tl_research.prepare mnist_m                        # a built-in dataset (or folder:PATH)

NAME is anything `data.name` takes. The dataset goes to D/NAME/[CONFIG/]VERSION (D: --data_dir, else TFDS's
default, ~/tensorflow_datasets or $TFDS_DATA_DIR), written by `builder.download_and_prepare(file_format=
"array_record")`; downloads are kept in D/downloads. The command prints where the dataset went and the size of
each split; one already prepared in array_record is left as it is (exit 0).

Refusals are one `error:` line, exit code 2:
- a TFDS builder whose code needs TensorFlow to prepare it, where TensorFlow is not installed: the line names
  `pip install -r requirements-prepare.txt` (the runtime requirements plus tensorflow-cpu; reading the prepared
  dataset afterwards still needs no TensorFlow);
- a dataset downloaded by hand (TFDS's manual_dir, e.g. ImageNet): where to put its files;
- a dataset prepared as tfrecord only (what `tfds build` writes by default): rerun with --overwrite, which
  rewrites it as array_record (reusing its downloads where they are still in D/downloads);
- an unknown name.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements-prepare.txt"


class Refused(Exception):
    """Preparation that cannot go ahead; the message is the one line the user sees."""


@dataclasses.dataclass
class Prepared:
    name: str  # as given (data.name's spelling)
    data_dir: str  # the prepared variant's folder: D/NAME/[CONFIG/]VERSION
    data_dir_root: str  # D, what data.data_dir should name
    splits: dict[str, int]  # split -> examples
    already: bool  # was prepared before this call


def pip_command() -> str:
    """`pip install -r requirements-prepare.txt`, the path relative to the current directory where it lies below."""
    rel = os.path.relpath(REQUIREMENTS)
    return f"pip install -r {REQUIREMENTS if rel.startswith('..') else rel}"


def _chain(e: BaseException | None):
    """An exception and the ones it was raised from or during, once each."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _needs_tensorflow(e: BaseException | None) -> bool:
    """Whether an exception (or one in its chain) is a missing TensorFlow module."""
    for x in _chain(e):
        if isinstance(x, ImportError):
            module, text = getattr(x, "name", None) or "", str(x)
            if module == "tensorflow" or module.startswith("tensorflow.") or re.search(
                    r"No module named '?tensorflow(['.]|$)", text) or "Failed to import TensorFlow" in text:
                return True
    return False


def _missing_module(e: BaseException | None) -> str:
    return next((x.name for x in _chain(e) if isinstance(x, ModuleNotFoundError) and x.name), "")


def _tensorflow_refusal(name: str) -> Refused:
    return Refused(f"preparing {name} needs TensorFlow (its TFDS code imports it), which is not installed: "
                   f"{pip_command()}, then rerun this command (runs read the prepared dataset without TensorFlow)")


class _NoTensorFlowBanner:
    """stdout without the banner TFDS prints when its code fails to import TensorFlow (the refusal line says it)."""

    def __init__(self, out):
        self.out, self.dropping = out, False

    def write(self, text: str) -> int:
        if "Failed to import TensorFlow" in text or (text.strip() and not text.strip("*\n ")):
            self.dropping = True
        elif text.strip():
            self.dropping = False
        if not self.dropping:
            self.out.write(text)
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def _quiet():
    return contextlib.redirect_stdout(_NoTensorFlowBanner(sys.stdout))


def _one_line(e: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {(lines[0] if lines else '')[:limit]}"


def _tfds_name(name: str, config: str | None, version: str | None) -> str:
    """NAME with --config and --version folded in: name[/config][:version], as tfds.builder reads it."""
    if config:
        if "/" in name.split(":")[0]:
            raise Refused(f"--config {config}: {name} names a config already")
        base, colon, ver = name.partition(":")
        name = f"{base}/{config}{colon}{ver}"
    if version:
        if ":" in name:
            raise Refused(f"--version {version}: {name} names a version already")
        name = f"{name}:{version}"
    return name


def _splits(b) -> dict[str, int]:
    return {str(k): int(v.num_examples) for k, v in b.info.splits.items()}


def _random_access(b) -> bool:
    import tensorflow_datasets as tfds
    return bool(b.info.available_file_formats() & tfds.core.file_adapters.FileFormat.with_random_access())


def _tfds_builder(name: str, data_dir: str | None):
    """tfds.builder for a TFDS name; Refused for an unknown name or where its code needs TensorFlow."""
    import tensorflow_datasets as tfds
    from tl_research.data import registry
    try:
        with _quiet():
            return tfds.builder(name, data_dir=data_dir)  # the format is download_and_prepare's
    except tfds.core.registered.DatasetNotFoundError:
        raise Refused(f"{name}: no such dataset; allowed: a built-in dataset ({', '.join(registry.BUILDERS)}), "
                      "a TFDS dataset name (name[/config][:version]), vtab:TASK or folder:PATH") from None
    except ImportError as e:
        if _needs_tensorflow(e):
            raise _tensorflow_refusal(name) from None
        raise Refused(f"{name}: its TFDS code needs a module that is not installed ({_one_line(e)})") from None
    except (ValueError, AssertionError, KeyError) as e:  # an unknown config or version
        raise Refused(f"{name}: {_one_line(e)}") from None


def _manual_dir(b, manual_dir: str | None) -> pathlib.Path | None:
    """Where a dataset downloaded by hand must have its files (None when it downloads itself)."""
    if not getattr(b, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        return None
    return pathlib.Path(manual_dir or pathlib.Path(b.data_dir_root) / "downloads" / "manual").expanduser()


def _manual_refusal(name: str, b, where: pathlib.Path) -> Refused:
    instructions = " ".join(str(b.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
    return Refused(f"{name} is downloaded by hand: put its files in {where} (or pass --manual_dir DIR), then rerun "
                   f"this command; TFDS's instructions: {instructions[:400]}")


def _prepare_tfds(name: str, data_dir: str | None, *, manual_dir: str | None, overwrite: bool) -> Prepared:
    b = _tfds_builder(name, data_dir)
    if not b.is_prepared():
        _generate(name, b, manual_dir)
        return Prepared(name, str(b.data_dir), str(b.data_dir_root), _splits(b), already=False)
    if _random_access(b):
        return Prepared(name, str(b.data_dir), str(b.data_dir_root), _splits(b), already=True)
    if not overwrite:
        formats = ", ".join(sorted(f.value for f in b.info.available_file_formats())) or "?"
        raise Refused(f"{name} is prepared in {b.data_dir} as {formats} only, which needs TensorFlow to read; it "
                      "must be array_record: rerun with --overwrite to rewrite it as array_record (its downloads "
                      "are reused)")
    # The tfrecord copy is set aside (its builder's info is fixed to tfrecord), a fresh builder writes
    # array_record in its place, and the copy is deleted only once that has succeeded (else it is put back).
    variant = pathlib.Path(b.data_dir)
    aside = variant.with_name(f".{variant.name}.tfrecord")
    shutil.rmtree(aside, ignore_errors=True)
    variant.rename(aside)
    try:
        b = _tfds_builder(name, str(b.data_dir_root))
        _generate(name, b, manual_dir)
    except BaseException:
        if not variant.exists():
            aside.rename(variant)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return Prepared(name, str(b.data_dir), str(b.data_dir_root), _splits(b), already=False)


def _generate(name: str, b, manual_dir: str | None) -> None:
    """b.download_and_prepare in array_record; Refused where TensorFlow, another module or manual files lack."""
    import tensorflow_datasets as tfds
    from tl_research.data import tfds_spill
    where = _manual_dir(b, manual_dir)
    if where is not None and (not where.is_dir() or not any(where.iterdir())):
        raise _manual_refusal(name, b, where)
    try:
        with _quiet(), tfds_spill.without_tensorflow():  # builders that need no TensorFlow spill without it too
            b.download_and_prepare(file_format="array_record", download_config=tfds.download.DownloadConfig(
                manual_dir=str(where) if where else None))
    except ImportError as e:
        if _needs_tensorflow(e):
            raise _tensorflow_refusal(name) from None
        module = _missing_module(e)
        raise Refused(f"preparing {name} needs the Python module {module or '?'}, which is not installed"
                      + (f": pip install {module.split('.')[0]}" if module else f" ({_one_line(e)})")) from None
    except AssertionError as e:
        if "Manual directory" in str(e):
            raise _manual_refusal(name, b, where or pathlib.Path(b.data_dir_root) / "downloads" / "manual") from None
        raise


def prepare(name: str, data_dir: str | None = None, *, config: str | None = None, version: str | None = None,
            manual_dir: str | None = None, overwrite: bool = False) -> Prepared:
    """Prepares the dataset `name` (anything data.name takes) in array_record under `data_dir` (None: TFDS's
    default). Refused (one line) where it cannot; an already prepared dataset is left as it is."""
    from tl_research.data import folder, pipeline, registry
    from tl_research.core.errors import ConfigError
    data_dir = str(pathlib.Path(data_dir).expanduser()) if data_dir else None
    local = name in registry.BUILDERS or name.startswith(folder.PREFIX)
    if (config or version) and (local or name.startswith(pipeline.VTAB_PREFIX)):
        raise Refused(f"--config/--version: {name} has neither (they are for TFDS names)")
    if local:
        cfg = pipeline.default_config()
        cfg.name, cfg.data_dir = name, data_dir or ""
        if name in registry.BUILDERS:
            already = registry.BUILDERS[name](file_format="array_record", data_dir=data_dir).is_prepared()
        else:
            already = False  # a folder's prepared copy is keyed on its files: pipeline.builder finds or makes it
        try:
            b = pipeline.builder(cfg)
        except ConfigError as e:
            raise Refused(str(e)) from None
        return Prepared(name, str(b.data_dir), str(b.data_dir_root), _splits(b), already=already)
    if not name.startswith(pipeline.VTAB_PREFIX):
        return _prepare_tfds(_tfds_name(name, config, version), data_dir, manual_dir=manual_dir, overwrite=overwrite)
    cfg = pipeline.default_config()
    cfg.name = name
    try:
        task = pipeline.vtab_task(cfg)
    except ConfigError as e:
        raise Refused(str(e)) from None
    done = _prepare_tfds(task.tfds_name, data_dir, manual_dir=manual_dir, overwrite=overwrite)
    return dataclasses.replace(done, name=name)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tl_research.prepare", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("name", help="a built-in dataset, a TFDS name (name[/config][:version]), vtab:TASK or folder:PATH")
    p.add_argument("--data_dir", default=None, help="the TFDS data dir (default: TFDS's, ~/tensorflow_datasets or "
                   "$TFDS_DATA_DIR); runs read it as data.data_dir")
    p.add_argument("--config", default=None, help="the TFDS builder config (e.g. coco's 2017)")
    p.add_argument("--version", default=None, help="the TFDS version (default: the builder's)")
    p.add_argument("--manual_dir", default=None, help="the files of a dataset downloaded by hand (default: "
                   "DATA_DIR/downloads/manual)")
    p.add_argument("--overwrite", action="store_true", help="rewrite a dataset prepared as tfrecord only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # bad flags: argparse's usage line, exit code 2
    from tl_research.cli import command_line
    command_line.quiet_logging()
    if not sys.stderr.isatty():  # a log file or a pipe: TFDS's progress bars would bury the lines that matter
        import tensorflow_datasets as tfds
        tfds.disable_progress_bar()
    try:
        done = prepare(args.name, args.data_dir, config=args.config, version=args.version,
                       manual_dir=args.manual_dir, overwrite=args.overwrite)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    state = "already prepared" if done.already else "prepared"
    print(f"{done.name}: {state} in array_record at {done.data_dir}")
    print("splits: " + ", ".join(f"{k} {v:,}" for k, v in done.splits.items()))
    print(f"use: --config.data.name={done.name} --config.data.data_dir={done.data_dir_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
