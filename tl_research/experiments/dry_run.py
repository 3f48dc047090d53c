"""An experiment's dry run (`python -m tl_research.experiments run NAME [--scale paper] --dry_run`): what its
sweep would read and cost, without reading any data or weights or training anything.

It prints the datasets the runs and source models read (TFDS names, the split strings and their sizes where
known, whether each is prepared under the TFDS data dir), the weights they start from (and whether each file or
directory is there), the number of runs and source models, an estimate of the GPU-hours on one A100 and on one
H100 (tl_research.experiments.costs), and then the missing inputs, one line each with the command that makes
them. Split sizes come from a prepared dataset's dataset_info.json (metadata, not data), else from KNOWN (the
TFDS catalog's figures for the datasets the paper-scale configs read); a run whose training-set size is
unknown is left out of the estimate, and the dry run says how many were.

A paper.py may define WEIGHTS = {path: "the command that makes it"} (the conversion of a published checkpoint,
docs/pretrained.md): the line for a missing weights path then names that command.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import pathlib
import types

from tl_research import config as config_lib
from tl_research.experiments import costs

# TFDS catalog figures: examples per split, classes (None: the task's own), native image side (None: mixed)
KNOWN: dict[str, tuple[dict[str, int], int | None, int | None]] = {
    "imagenet2012": ({"train": 1281167, "validation": 50000}, 1000, None),
    "imagenet_v2": ({"test": 10000}, 1000, None),
    "imagenet_sketch": ({"test": 50889}, 1000, None),
    "i_naturalist2017": ({"train": 579184, "validation": 95986}, 5089, None),
    "food101": ({"train": 75750, "validation": 25250}, 101, None),
    "stanford_dogs": ({"train": 12000, "test": 8580}, 120, None),
    "cars196": ({"train": 8144, "test": 8041}, 196, None),
    "caltech_birds2011": ({"train": 5994, "test": 5794}, 200, None),
    "sun397/tfds": ({"train": 76128, "validation": 10875, "test": 21750}, 397, None),
    "cifar10": ({"train": 50000, "test": 10000}, 10, 32),
    "cifar100": ({"train": 50000, "test": 10000}, 100, 32),
    "cifar10_corrupted": ({"test": 10000}, 10, 32),
    "stl10": ({"train": 5000, "test": 8000}, 10, 96),
    "eurosat/rgb": ({"train": 27000}, 10, 64),
    "oxford_iiit_pet": ({"train": 3680, "test": 3669}, 37, None),
    "oxford_flowers102": ({"train": 1020, "validation": 1020, "test": 6149}, 102, None),
    "caltech101": ({"train": 3060, "test": 6084}, 102, None),
    "dtd": ({"train": 1880, "validation": 1880, "test": 1880}, 47, None),
    "svhn_cropped": ({"train": 73257, "test": 26032, "extra": 531131}, 10, 32),
    "patch_camelyon": ({"train": 262144, "validation": 32768, "test": 32768}, 2, 96),
    "resisc45": ({"train": 31500}, 45, 256),
    "diabetic_retinopathy_detection/btgraham-300": ({"train": 35126, "validation": 10906, "test": 42670}, 5, None),
    "clevr": ({"train": 70000, "validation": 15000, "test": 15000}, None, None),
    "dmlab": ({"train": 65550, "validation": 22628, "test": 22735}, 6, None),
    "dsprites": ({"train": 737280}, None, 64),
    "kitti": ({"train": 6347, "validation": 423, "test": 711}, None, None),
    "smallnorb": ({"train": 24300, "test": 24300}, 5, 96),
}
DEFAULT_SIZE = 224  # the input side assumed where neither the config, the model nor the dataset fixes one


@dataclasses.dataclass
class Dataset:
    """One data.name the sweep reads: where it is, whether it is ready, its split sizes if known."""

    name: str
    tfds: str | None  # None: built in (prepared on first use) or a folder
    data_dir: str
    splits: list[str] = dataclasses.field(default_factory=list)
    sizes: dict[str, int] | None = None
    classes: int | None = None
    native: int | None = None
    problem: str = ""  # why it is not ready ("" when it is, or when it is built in)

    def size(self, spec: str) -> int | None:
        """Examples of a TFDS split string (e.g. train[:45000]+test) from the split sizes, else None."""
        if not self.sizes:
            return None
        import tensorflow_datasets as tfds
        infos = {k: types.SimpleNamespace(num_examples=v) for k, v in self.sizes.items()}
        try:
            parts = tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos)
        except (KeyError, ValueError, AssertionError, AttributeError, TypeError):
            return None
        total = 0
        for a in parts:  # from_ / to None: the split's start / end
            n = self.sizes[a.splitname]
            total += (n if a.to is None else a.to) - (a.from_ or 0)
        return total


def _data_dir(data_cfg_dir: str) -> str:
    import tensorflow_datasets as tfds
    return os.path.expanduser(data_cfg_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR)


def _prepared_info(data_dir: str, tfds_name: str) -> dict | None:
    """The dataset_info.json of `tfds_name` prepared under data_dir (the newest version), or None."""
    found = sorted(glob.glob(os.path.join(data_dir, tfds_name, "**", "dataset_info.json"), recursive=True))
    return json.loads(pathlib.Path(found[-1]).read_text()) if found else None


def describe(name: str, data_dir: str) -> Dataset:
    """What the dry run knows of data.name `name` without reading its data."""
    from tl_research.data import folder, registry, vtab
    if name in registry.BUILDERS:
        return Dataset(name, None, data_dir)
    if name.startswith(folder.PREFIX):
        path = name[len(folder.PREFIX):]
        return Dataset(name, None, data_dir, problem="" if os.path.isdir(path) else f"no folder {path}")
    task = vtab.VTAB_TASKS.get(name[len("vtab:"):]) if name.startswith("vtab:") else None
    tfds_name = task.tfds_name if task else name
    d = Dataset(name, tfds_name, _data_dir(data_dir))
    known = KNOWN.get(tfds_name) or KNOWN.get(tfds_name.split("/")[0])
    if known:
        d.sizes, d.classes, d.native = dict(known[0]), known[1], known[2]
    if task:
        d.classes = task.num_classes
    info = _prepared_info(d.data_dir, tfds_name)
    if info is None:
        d.problem = _unprepared(name, tfds_name, d.data_dir)
        return d
    d.sizes = {s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in info.get("splits", [])}
    formats = {info.get("fileFormat", "tfrecord"), *info.get("alternativeFileFormats", [])}
    if "array_record" not in formats:
        from tl_research.data import pipeline
        d.problem = (f"prepared as {', '.join(sorted(formats))} only (needs array_record): "
                     f"{pipeline.prepare_command(name, d.data_dir)} --overwrite")
    return d


def _unprepared(name: str, tfds_name: str, data_dir: str) -> str:
    import tensorflow_datasets as tfds
    from tl_research.data import pipeline
    try:
        tfds.builder_cls(tfds_name.split("/")[0])
    except tfds.core.registered.DatasetNotFoundError:
        return f"no TFDS dataset {tfds_name!r} (data.name: a built-in dataset, a TFDS name, vtab:TASK, folder:PATH)"
    return f"not prepared in {data_dir}: {pipeline.prepare_command(name, data_dir)}"


def split_strings(data_cfg, d: Dataset) -> dict[str, str]:
    """train / val / test split strings of a data config (a VTAB task's named splits made absolute when the
    task's split sizes are known)."""
    from tl_research.data import vtab
    values = {"train": data_cfg.train_split, "val": data_cfg.val_split, "test": data_cfg.test_split}
    task = vtab.VTAB_TASKS.get(d.name[len("vtab:"):]) if d.name.startswith("vtab:") else None
    if task is None:
        return values
    if data_cfg.vtab:
        values.update(train=data_cfg.vtab, val="val200")
    try:
        return {k: task.split(v, {s: d.sizes[s] for s in task.base_splits()}) for k, v in values.items()}
    except (KeyError, TypeError, ValueError):
        return values


def _class_fraction(data_cfg, d: Dataset) -> float:
    return len(data_cfg.classes) / d.classes if data_cfg.classes and d.classes else 1.0


def training_examples(data_cfg, d: Dataset, n: float | None) -> float | None:
    """The size of a run's training set from its split's size `n`: the class subset (its share of the classes),
    data.vtab's 800 or 1,000 records, data.per_class, data.imbalance_ratio, data.train_examples."""
    if n is None:
        return None
    if data_cfg.vtab and not d.name.startswith("vtab:"):
        n = min(n, 800 if data_cfg.vtab == "train800" else 1000)
    n *= _class_fraction(data_cfg, d)
    classes = len(data_cfg.classes) or d.classes
    ratio = float(data_cfg.imbalance_ratio)
    if data_cfg.per_class or ratio > 1:
        if not classes:
            return None
        top = min(data_cfg.per_class or n / classes, n / classes)
        n = sum(top * ratio ** (-c / max(1, classes - 1)) for c in range(classes))
    return min(n, data_cfg.train_examples) if data_cfg.train_examples else n


def input_size(cfg, d: Dataset) -> int:
    from tl_research import models
    meta = getattr(models, "META", {}).get(cfg.model.name)
    return int(cfg.data.image_size or (meta.input_size[0] if meta and meta.input_size else 0) or d.native
               or DEFAULT_SIZE)


def channels(cfg) -> int:
    from tl_research import models
    meta = getattr(models, "META", {}).get(cfg.model.name)
    return int(cfg.data.channels or (meta.input_size[2] if meta and meta.input_size else 0) or 3)


def extra_tests(cfg) -> list[tuple[str, str]]:
    """(data.name, split) of the config's extra classification evaluators that read another split or dataset."""
    out = []
    for name in cfg.evals.keys():
        spec = cfg.evals[name]
        if spec.get("type") == "classification" and (spec.get("data") or spec.get("split") not in
                                                      ("train", "val", "test")):
            out.append((spec.get("data") or cfg.data.name, spec.get("split", "test")))
    return out


def weights_of(cfg) -> str | None:
    """The path a config's init names (a directory, or the file of keras:/torch:/npz:), or None."""
    if cfg.init in ("scratch", "source"):
        return None
    fmt, sep, path = cfg.init.partition(":")
    return path if sep and fmt in ("keras", "torch", "npz") else cfg.init


def weights_present(path: str) -> bool:
    return os.path.exists(path)


def _source_key(source) -> str:
    """A source model's identity apart from its seed (the seed is counted on its own)."""
    seed, source.seed = source.seed, 0
    try:
        return config_lib.config_hash(source)
    finally:
        source.seed = seed


def sweep_configs(base, points) -> tuple[list, list]:
    """([(config, how many runs it stands for)], [the distinct source models' configs]) of a sweep. Runs that
    differ only in their seed share one config (their data and cost are the same: apply_overrides copies the
    config, a few ms a point); a source model that takes the run's seed (source.seed = -1) counts once per seed."""
    groups: dict[str, list[dict]] = {}
    for p in points:
        groups.setdefault(json.dumps({k: v for k, v in p.items() if k != "seed"}, sort_keys=True, default=repr),
                          []).append(p)
    runs = [(config_lib.apply_overrides(base, g[0]), g) for g in groups.values()]
    probe = next(((c, g) for c, g in runs if c.init == "source" and c.source is not None and len(g) > 1), None)
    per_seed = probe is not None and probe[0].source.seed != \
        config_lib.apply_overrides(base, probe[1][1]).source.seed
    sources = {}
    for c, g in runs:
        if c.init == "source" and c.source is not None:
            key = _source_key(c.source)
            for p in g if per_seed else g[:1]:
                sources.setdefault((key, p.get("seed", base.seed) if per_seed else c.source.seed), c.source)
    return [(c, len(g)) for c, g in runs], list(sources.values())


def cost_of(cfg, datasets: dict[str, Dataset], flops=None) -> costs.RunCost | None:
    """The run's cost (costs.run_cost) from its datasets' split sizes; None where its training-set size is
    unknown (the size of a split it evaluates on counts as 0 when unknown)."""
    d = datasets[cfg.data.name]
    splits = split_strings(cfg.data, d)
    frac = _class_fraction(cfg.data, d)
    train_n = training_examples(cfg.data, d, d.size(splits["train"]))
    if train_n is None and not cfg.train.steps:
        return None
    val_n, test_n = ((d.size(splits[k]) or 0) * frac for k in ("val", "test"))
    extra = sum((datasets[n].size(s) or 0) * frac for n, s in extra_tests(cfg))
    return costs.run_cost(cfg, train_n or 0, val_n, test_n, extra, input_size(cfg, d), channels(cfg),
                          flops or costs.forward_flops)


def collect_datasets(configs: list) -> dict[str, Dataset]:
    datasets: dict[str, Dataset] = {}
    for cfg in configs:
        d = datasets.setdefault(cfg.data.name, describe(cfg.data.name, cfg.data.data_dir))
        for spec in split_strings(cfg.data, d).values():
            if spec not in d.splits:
                d.splits.append(spec)
        for name, split in extra_tests(cfg):
            e = datasets.setdefault(name, describe(name, cfg.data.data_dir))
            if split not in e.splits:
                e.splits.append(split)
    return datasets


def _fmt_size(n: int | None) -> str:
    return "size unknown" if n is None else f"{n:,}"


def dataset_line(d: Dataset) -> str:
    where = "built in (prepared on first use)" if d.tfds is None and not d.problem else (
        d.problem.split(":")[0] if d.problem else "prepared")
    name = d.name if d.tfds in (None, d.name) else f"{d.name} (TFDS {d.tfds})"
    splits = " | ".join(f"{s} {_fmt_size(d.size(s))}" for s in d.splits)
    return f"  {name}: {splits}: {where}"


@dataclasses.dataclass
class Plan:
    """What a dry run found: counts, the estimate (GPU -> hours) and the missing inputs."""

    runs: int
    sources: int
    hours: dict[str, float]
    unestimated: int
    missing: list[str]
    datasets: dict[str, Dataset]
    weights: dict[str, int]
    configs: list  # one config per distinct run (seeds apart), then the source models'


def plan(base, points, weights_help: dict | None = None, flops=None) -> Plan:
    """The dry run's findings for a sweep (nothing printed)."""
    runs, sources = sweep_configs(base, points)
    weighted = runs + [(c, 1) for c in sources]
    datasets = collect_datasets([c for c, _ in weighted])
    weights: dict[str, int] = {}
    for cfg, n in weighted:
        path = weights_of(cfg)
        if path:
            weights[path] = weights.get(path, 0) + n
    estimated = [(cost_of(c, datasets, flops), n) for c, n in weighted]
    known = [c for c, n in estimated for _ in range(n) if c is not None]
    missing = [f"dataset {d.name}: {d.problem}" for d in datasets.values() if d.problem]
    for path, n in weights.items():
        if not weights_present(path):
            how = (weights_help or {}).get(path) or ("convert the published checkpoint: python -m tl_research.convert "
                                                     f"FILE --arch MODEL --out {path} (docs/pretrained.md)")
            missing.append(f"weights {path} (the init of {n} run(s)): {how}")
    return Plan(len(points), len(sources), {g: costs.hours(known, g) for g in costs.GPUS},
                sum(n for c, n in estimated if c is None), missing, datasets, weights, [c for c, _ in weighted])


def model_lines(configs: list, datasets: dict[str, Dataset], flops=None) -> list[str]:
    """One line per (model, input size, precision, batch, frozen or not) of the configs: forward FLOPs and
    training images/s per GPU."""
    flops, seen, out = flops or costs.forward_flops, set(), []
    for cfg in configs:
        size = input_size(cfg, datasets[cfg.data.name])
        batch, factor = cfg.data.batch_size, costs.FROZEN_FACTOR if costs.frozen_backbone(cfg) else costs.TRAIN_FACTOR
        key = (cfg.model.to_json(), size, cfg.get("precision", "float32"), batch, factor)
        if key in seen:
            continue
        seen.add(key)
        c = costs.RunCost(cfg.model.name, size, key[2], 1, 1.0, factor, 0, 0.0, flops(cfg.model, size, channels(cfg)))
        rates = ", ".join(f"{c.images_per_second(g, batch):,.0f} on one {g}" for g in costs.GPUS)
        what = "frozen backbone" if factor == costs.FROZEN_FACTOR else "training"
        out.append(f"  {cfg.model.name} at {size} px, {key[2]}, batch {batch}, {what}: "
                   f"{c.forward / 1e9:.2f} GFLOP a forward pass; {rates} images/s")
    return out


def report(title: str, base, points, weights_help: dict | None = None, echo=print,
           flops=None) -> Plan:
    """Prints the dry run of a sweep and returns its Plan. flops(model_cfg, size, channels): a forward pass's
    FLOPs (default costs.forward_flops)."""
    p = plan(base, points, weights_help, flops)
    seeds = sorted({pt.get("seed", base.seed) for pt in points}, key=str)
    echo(f"{title}: {p.runs} run(s) (seeds {', '.join(map(str, seeds))}), {p.sources} source model(s)")
    echo("datasets:")
    for d in p.datasets.values():
        echo(dataset_line(d))
    echo("weights:" if p.weights else "weights: none (every run and source model starts from scratch or a source)")
    for path, n in p.weights.items():
        echo(f"  {path} (the init of {n} run(s)): {'present' if weights_present(path) else 'missing'}")
    echo("models (FLOPs: XLA's cost analysis; images/s: tl_research/experiments/costs.py):")
    for line in model_lines(p.configs, p.datasets, flops):
        echo(line)
    left = f"; {p.unestimated} run(s) of unknown size left out" if p.unestimated else ""
    overhead = (p.runs + p.sources - p.unestimated) * costs.RUN_OVERHEAD_S / 3600
    echo("estimated GPU-hours: " + ", ".join(f"{_hours(h)} on one {g}" for g, h in p.hours.items())
         + f" ({_hours(overhead)} of them {costs.RUN_OVERHEAD_S:g} s a run of overhead){left}")
    echo(f"missing ({len(p.missing)}):" if p.missing else "missing: nothing, every input is in place")
    for line in p.missing:
        echo(f"  {line}")
    return p


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h < 10 else f"{math.ceil(h):,}"
