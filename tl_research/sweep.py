"""Running a sweep: expand the axes, check every run before any starts, train the source models the runs
start from, skip finished runs, and record one results row per run."""
from __future__ import annotations

import json
import logging
import pathlib
import time
import traceback

from flax.traverse_util import flatten_dict

from tl_research import config as config_lib
from tl_research import distributed, domain_similarity, results, tracking, trainer
from tl_research.errors import ConfigError

log = logging.getLogger(__name__)
RESULTS = "results.csv"


def run_configs(base, points, workdir="."):
    """(run id, swept values, run config) per point; every one validated, and the report's keys."""
    results.check_report(base.report, points)
    out = []
    for point in points:
        cfg = config_lib.apply_overrides(base, point)
        config_lib.validate(cfg)
        domain_similarity.check(cfg, workdir)
        out.append((config_lib.run_id(point), point, cfg))
    return out


def _check_workdir(workdir: pathlib.Path, runs) -> None:
    """A run directory already holding a different config is never overwritten or mixed into. The report
    block is left out: it changes how results are tabulated (or measured after the fact: report.similarity),
    not what a run trains."""
    for rid, _, cfg in runs:
        existing = workdir / rid / "config.json"
        if existing.exists():
            old = {k: v for k, v in json.loads(existing.read_text()).items() if k != "report"}
            new = {k: v for k, v in json.loads(cfg.to_json()).items() if k != "report"}
            if old != new:
                old, new = flatten_dict(old, sep="."), flatten_dict(new, sep=".")
                diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                raise ConfigError("--workdir", str(workdir), "a new workdir, or the config its runs were made with",
                                  why=f"run {rid} there has a different config ({', '.join(diff[:5])})")


def source_dir(workdir: pathlib.Path, source_cfg) -> pathlib.Path:
    return workdir / "sources" / config_lib.config_hash(source_cfg)


def train_source(source_cfg, workdir: pathlib.Path, cache, progress: bool) -> tuple[pathlib.Path, str]:
    """Trains a source model once per workdir (keyed by its config) and returns its directory."""
    d = source_dir(workdir, source_cfg)
    d.mkdir(parents=True, exist_ok=True)
    if distributed.is_writer():
        (d / "config.json").write_text(source_cfg.to_json(indent=1))
    result = trainer.run(source_cfg, d, cache=cache, wandb_dir=workdir / "wandb",
                         group=f"{source_cfg.name}-source", name=f"source {d.name}", run_id=f"source-{d.name}",
                         progress=progress)
    return d, (result.reason if result.status != "done" else "")


def run_sweep(base, points, workdir, *, progress: bool = True, retry_failed: bool = False,
              echo=print) -> list[dict]:
    workdir = pathlib.Path(workdir).absolute()
    runs = run_configs(base, points, workdir)  # every check before any work
    workdir.mkdir(parents=True, exist_ok=True)
    _check_workdir(workdir, runs)
    distributed.barrier("workdir checked")  # multi-host: before process 0 writes into it
    csv_path = workdir / RESULTS
    finished = {r["run_id"]: r for r in results.read_rows(csv_path)}
    cache = trainer.StepCache()
    swept_keys = sorted({k for p in points for k in p})
    sources: dict[str, tuple[pathlib.Path, str]] = {}
    todo = [(rid, p, c) for rid, p, c in runs
            if not (rid in finished and (finished[rid]["status"] == "done" or not retry_failed))]
    if len(todo) < len(runs):
        echo(f"{len(runs) - len(todo)} of {len(runs)} runs already in {csv_path}; skipping them")
    for i, (rid, point, cfg) in enumerate(todo, 1):
        run_dir = workdir / rid
        run_dir.mkdir(parents=True, exist_ok=True)
        if distributed.is_writer():  # multi-host: process 0 writes, every process trains
            (run_dir / "config.json").write_text(cfg.to_json(indent=1))
        t0 = time.time()
        init_path, failure = None, ""
        if cfg.init == "source":
            key = config_lib.config_hash(cfg.source)
            if key not in sources:
                echo(f"training source model {key} (once per workdir)")
                sources[key] = train_source(config_lib.copy_config(cfg.source), workdir, cache, progress)
            src, reason = sources[key]
            init_path = str(src / "weights")
            failure = f"source run failed: {reason}" if reason else ""
        if failure:
            result = trainer.RunResult("failed", failure, {})
        else:
            try:
                result = trainer.run(cfg, run_dir, init_path=init_path, cache=cache, wandb_dir=workdir / "wandb",
                                     group=base.name, name=config_lib.run_name(point), run_id=rid,
                                     progress=progress)
            except ConfigError as e:
                result = trainer.RunResult("failed", str(e), {})
            except Exception as e:  # noqa: BLE001 - a failed run is recorded and the sweep goes on
                if distributed.is_writer():
                    (run_dir / "error.txt").write_text(traceback.format_exc())
                result = trainer.RunResult("failed", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                                           if str(e) else type(e).__name__, {})
        row = {"run_id": rid, **{k: point.get(k, _get(cfg, k)) for k in swept_keys}, "status": result.status,
               "reason": result.reason, **result.metrics}
        row.setdefault("wall_time", round(time.time() - t0, 2))
        if distributed.is_writer():
            results.upsert_row(csv_path, row)
        metric = result.metrics.get("test_accuracy")
        shown = f"test_accuracy={metric:.4f}" if isinstance(metric, float) else result.reason
        echo(f"[{i}/{len(todo)}] {config_lib.run_name(point)}: {result.status} {shown} "
             f"({row['wall_time']:.1f}s)")
    if base.report.similarity:
        _record_similarity(runs, workdir, csv_path, base.report.similarity_gamma, echo)
    distributed.barrier("sweep rows written")
    rows = results.read_rows(csv_path)
    if distributed.is_writer():
        tracking.log_sweep_table(base.wandb, base.name, workdir / "wandb", rows)
    return rows


def range_test(base, workdir, *, progress: bool = True, echo=print) -> dict:
    """The LR range test of a sweep's base config into DIR/lr_range_test (training its source model first,
    into the same place the sweep will look for it)."""
    from tl_research import lr_range
    workdir = pathlib.Path(workdir).absolute()
    config_lib.validate(base)
    init_path = None
    cache = trainer.StepCache()
    if base.init == "source":
        echo(f"training source model {config_lib.config_hash(base.source)} (once per workdir)")
        src, reason = train_source(config_lib.copy_config(base.source), workdir, cache, progress)
        if reason:
            raise ConfigError("source", "(the source run)", "a source config that trains", why=reason)
        init_path = str(src / "weights")
    return lr_range.run(base, workdir / lr_range.OUT, init_path=init_path, cache=cache, progress=progress,
                        echo=echo)


def _record_similarity(runs, workdir, csv_path, gamma: float, echo) -> None:
    """Adds the domain_similarity column to the finished runs that start from a source model (measured once
    per (source, target data) and cached in the workdir, so a relaunch only reads it back)."""
    rows = results.read_rows(csv_path)
    done = {r["run_id"] for r in rows if r["status"] == "done"}
    try:
        sims, measurer = domain_similarity.for_runs([(rid, cfg) for rid, _, cfg in runs if rid in done],
                                                    workdir, gamma)
    except Exception as e:  # noqa: BLE001 - the trained runs' results and report still count
        log.warning("domain similarity not measured: %s", e)
        (workdir / "similarity_error.txt").write_text(traceback.format_exc())
        return
    for r in rows:
        if r["run_id"] in sims:
            r["domain_similarity"] = sims[r["run_id"]]
    results.write_rows(csv_path, rows)
    if measurer.computed:
        echo(f"domain similarity: {measurer.computed} (source, target) pair(s) measured, {measurer.cached} "
             f"read from {workdir / domain_similarity.CACHE_DIR}")


def _get(cfg, key):
    node = cfg
    for p in key.split("."):
        node = node[p]
    return node
