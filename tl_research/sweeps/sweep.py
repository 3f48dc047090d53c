"""Running a sweep: expand the axes, check every run before any starts, train the source models the runs
start from, skip finished runs, and record one results row per run."""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
import traceback

from flax.traverse_util import flatten_dict

from tl_research import config as config_lib
from tl_research.core import distributed, durable, interrupts, locks, runtime, timing
from tl_research.analysis import domain_similarity, results, transferability_report
from tl_research.core import tracking
from tl_research.run import trainer
from tl_research.core.errors import ConfigError

log = logging.getLogger(__name__)
RESULTS = "results.csv"
WORKDIR_FILE = "workdir.json"  # the config a workdir was made with (_claim_workdir)


def run_configs(base, points, workdir="."):
    """(run id, swept values, run config) per point; every one validated, and the report's keys."""
    results.check_report(base.report, points)
    out = []
    for point in points:
        cfg = config_lib.apply_overrides(base, point)
        config_lib.validate(cfg)
        domain_similarity.check(cfg, workdir)
        transferability_report.check(cfg, workdir)
        config_lib.check_initial_weights(cfg)
        out.append((config_lib.run_id(point), point, cfg))
    return out


def _check_workdir(workdir: pathlib.Path, runs) -> None:
    """A run directory already holding a different config is never overwritten or mixed into. The report
    block is left out: it changes how results are tabulated (or measured after the fact: report.similarity),
    not what a run trains."""
    for rid, _, cfg in runs:
        recorded = durable.read_json(workdir / rid / "config.json")  # torn: absent (rewritten below)
        if isinstance(recorded, dict):  # what it ran on (runtime) is a record, not the config
            old = {k: v for k, v in config_lib.identity(recorded).items() if k not in ("report", "runtime")}
            new = {k: v for k, v in config_lib.identity(json.loads(cfg.to_json())).items() if k != "report"}
            if old != new:
                old, new = flatten_dict(old, sep="."), flatten_dict(new, sep=".")
                diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                raise ConfigError("--workdir", str(workdir), "a new workdir, or the config its runs were made with",
                                  why=f"run {rid} there has a different config ({', '.join(diff[:5])})")


def _claim_workdir(workdir: pathlib.Path, base, points) -> None:
    """DIR/workdir.json records the config a workdir was made with (its name and every key no run sweeps);
    a launch of another config, whose runs would have other ids, is refused rather than mixed in. More runs
    of the same config (another seed, a swept key overridden) are welcome."""
    path = workdir / WORKDIR_FILE
    swept = {k for p in points for k in p}
    recorded = durable.read_json(path)  # torn by a crash: absent, claimed again
    mine = {"name": base.name, "swept": sorted(swept), "fixed": _fixed_keys(base, swept)}
    if isinstance(recorded, dict) and "fixed" in recorded:
        ignore = swept | set(recorded.get("swept", ()))
        old = {k: v for k, v in recorded["fixed"].items() if not _under(k, ignore)}
        new = {k: v for k, v in mine["fixed"].items() if not _under(k, ignore)}
        diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if recorded.get("name") != base.name or diff:
            raise ConfigError("--workdir", str(workdir), "a new workdir, or the config it was made with",
                              why=f"it holds the runs of config '{recorded.get('name')}', which differs in "
                                  f"{', '.join((['name'] if recorded.get('name') != base.name else []) + diff[:5])}")
        return
    if distributed.is_writer():
        durable.write_json(path, mine)


def _fixed_keys(base, swept: set[str]) -> dict:
    flat = flatten_dict(config_lib.identity(json.loads(base.to_json())), sep=".")
    return {k: v for k, v in flat.items() if not _under(k, swept) and not k.startswith("report.")}


def _under(key: str, keys) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def prepare_workdir(workdir: pathlib.Path) -> None:
    """Creates the workdir, or refuses with one line one that is a file or cannot be written; removes the
    temporaries that writers which died mid-write left behind."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError("--workdir", str(workdir), "a directory (new or existing)", why="it is a file")
    fs = durable.filesystem_type(workdir)
    if fs in durable.NO_ATOMIC_RENAME:
        raise ConfigError("--workdir", str(workdir), "a directory on a file system with atomic rename and "
                          "working flock that every process sees (a local disk on one host; NFS such as "
                          "Filestore on a cluster or TPU pod)", why=f"it is on {fs}")
    if not distributed.is_writer():  # multi-host: process 0 creates and cleans the workdir
        return
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError("--workdir", str(workdir), "a directory this user can write",
                          why=e.strerror or type(e).__name__) from None
    durable.remove_stale_temporaries(workdir)
    for old in workdir.glob(".results-*.csv"):  # an earlier version's temporaries
        old.unlink(missing_ok=True)


def source_dir(workdir: pathlib.Path, source_cfg) -> pathlib.Path:
    return workdir / "sources" / config_lib.config_hash(source_cfg)


def train_source(source_cfg, workdir: pathlib.Path, cache, progress: bool, echo=print) -> tuple[pathlib.Path, str]:
    """Trains a source model once per workdir (keyed by its config) and returns its directory. Held under
    the source's lock: workers that need it at the same time wait for the one training it."""
    d = source_dir(workdir, source_cfg)
    d.mkdir(parents=True, exist_ok=True)
    with locks.held(locks.lock_path(workdir, "source", d.name), echo, what=f"source model {d.name}",
                    collective=True):
        if not (durable.read_json(d / trainer.RESULT_FILE) or {}).get("status"):
            echo(f"training source model {d.name} (once per workdir)")
        if distributed.is_writer():
            durable.write_text(d / "config.json", source_cfg.to_json(indent=1))
        result = trainer.run(source_cfg, d, cache=cache, wandb_dir=workdir / "wandb",
                             group=f"{source_cfg.name}-source", name=f"source {d.name}",
                             run_id=f"source-{d.name}", progress=progress)
    return d, (result.reason if result.status != "done" else "")


def _recorded(csv_path, retry_failed: bool) -> set[str]:
    """The run ids results.csv holds as finished (done, or failed unless failures are retried)."""
    return {r["run_id"] for r in results.read_rows(csv_path)
            if r["status"] == "done" or (r["status"] == "failed" and not retry_failed)}


def prepare(base, points, workdir) -> list:
    """Every check of a sweep before any work (each run's config, the workdir's own and the one it was made
    with), then the workdir claimed; the runs, as run_configs gives them. What a launcher calls before it
    submits anything, and what each of its jobs calls again (it is idempotent)."""
    workdir = pathlib.Path(workdir).absolute()
    runs = run_configs(base, points, workdir)  # every check before any work
    prepare_workdir(workdir)
    _check_workdir(workdir, runs)
    _claim_workdir(workdir, base, points)
    distributed.barrier("workdir checked")  # multi-host: every process reads what process 0 wrote
    return runs


def select(runs, only=None) -> list:
    """The runs whose ids `only` lists, in that order (None: all of them); an id the sweep does not have is
    a ConfigError naming the flag that selects runs."""
    if only is None:
        return list(runs)
    by_id = {r[0]: r for r in runs}
    unknown = [rid for rid in only if rid not in by_id]
    if unknown:
        shown = ", ".join(list(by_id)[:5]) + (", ..." if len(by_id) > 5 else "")
        raise ConfigError("--run", unknown[0], f"a run id of this sweep ({shown})")
    return [by_id[rid] for rid in only]


def shard(runs, spec: str) -> list:
    """--shard=i/n: runs i, i + n, i + 2n, ... of the sweep, in its order (every run in exactly one shard)."""
    i, slash, n = str(spec).partition("/")
    if not (slash and i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
        raise ConfigError("--shard", spec, "I/N with 0 <= I < N, e.g. --shard=0/4")
    return list(runs)[int(i)::int(n)]


def pending(runs, workdir, retry_failed: bool = False) -> list:
    """The runs results.csv does not hold as finished: what a (re)launch has left to do."""
    skip = _recorded(pathlib.Path(workdir).absolute() / RESULTS, retry_failed)
    return [r for r in runs if r[0] not in skip]


def run_sweep(base, points, workdir, *, progress: bool = True, retry_failed: bool = False,
              echo=print, only=None, finish: bool = True) -> list[dict]:
    """Trains the runs not recorded yet (with `only`, the runs of those ids, in that order). Several
    launches may share a workdir: each takes the runs nobody holds (DIR/.locks, tl_research.core.locks), then
    waits for the held ones and skips those finished meanwhile. `finish=False` (a launcher's job) leaves
    the sweep-wide steps (domain similarity, the W&B table) to whoever collects the sweep."""
    workdir = pathlib.Path(workdir).absolute()
    runs = prepare(base, points, workdir)
    mine = select(runs, only)
    csv_path = workdir / RESULTS
    todo = pending(mine, workdir, retry_failed)
    if len(todo) < len(mine):
        echo(f"{len(mine) - len(todo)} of {len(mine)} runs already in {csv_path}; skipping them")
    ctx = _SweepContext(base, workdir, csv_path, swept_keys(points), progress, retry_failed, echo, len(todo))
    held_elsewhere = []
    for run in todo:
        lock = locks.Lock(locks.lock_path(workdir, "run", run[0]), collective=True)
        if lock.try_acquire():
            ctx.run_locked(run, lock)
        else:
            held_elsewhere.append((run, lock))
    for run, lock in held_elsewhere:  # another launch is training these: wait, then skip them if it finished
        lock.acquire(echo, what=f"run {run[0]}")
        ctx.run_locked(run, lock)
    if not finish:
        tracking.wait()  # this process's W&B calls done before it reports back
        return results.read_rows(csv_path)
    return finish_sweep(base, runs, workdir, echo)


def train_sources(base, points, workdir, *, only=None, echo=print) -> dict[str, str]:
    """Trains the source models the runs (those `only` names) start from, each once, under its lock: a
    launcher's first stage. Source hash -> its failure reason ('' when trained)."""
    workdir = pathlib.Path(workdir).absolute()
    runs = select(prepare(base, points, workdir), only)
    cache, out = trainer.StepCache(), {}
    for _, _, cfg in runs:
        if cfg.init == "source" and config_lib.config_hash(cfg.source) not in out:
            d, reason = train_source(config_lib.copy_config(cfg.source), workdir, cache, False, echo)
            out[d.name] = reason
    return out


def source_pending(cfg, workdir) -> str | None:
    """The hash of the source model `cfg` starts from when it is not trained yet, else None."""
    if cfg.init != "source":
        return None
    d = source_dir(pathlib.Path(workdir).absolute(), cfg.source)
    return None if (durable.read_json(d / trainer.RESULT_FILE) or {}).get("status") else d.name


def finish_sweep(base, runs, workdir, echo=print) -> list[dict]:
    """The sweep-wide steps once its runs are trained: the domain similarity column, the transferability
    scores, the W&B table."""
    workdir = pathlib.Path(workdir).absolute()
    csv_path = workdir / RESULTS
    if base.report.similarity:
        _record_similarity(runs, workdir, csv_path, base.report.similarity_gamma, echo)
    if tuple(base.report.transferability):
        _record_transferability(base, runs, workdir, csv_path, echo)
    distributed.barrier("sweep rows written")
    rows = results.read_rows(csv_path)
    if distributed.is_writer():
        tracking.log_sweep_table(base.wandb, base.name, workdir / "wandb", rows)
        tracking.wait()
        sources = sorted((workdir / "sources").iterdir()) if (workdir / "sources").is_dir() else []
        timing.write_sweep(workdir, [workdir / rid for rid, _, _ in runs] + sources, echo)
    return rows


def swept_keys(points) -> list[str]:
    return sorted({k for p in points for k in p})


def _runtime(cfg) -> dict:
    """What the run is about to train on, for its config.json ({} when its mesh does not fit: the run then
    fails with the reason, as it would without this record)."""
    try:
        return runtime.describe(trainer.mesh(cfg))
    except (ValueError, RuntimeError):
        return {}


def result_row(rid, point, cfg, keys, result: trainer.RunResult) -> dict:
    """A run's results.csv row: the same whichever launcher (or --collect) writes it."""
    return {"run_id": rid, **{k: point.get(k, _get(cfg, k)) for k in keys}, "status": result.status,
            "reason": result.reason, **result.metrics}


def collect(base, points, workdir, echo=print) -> list[dict]:
    """Rebuilds results.csv from the run folders (each run's result.json is the record of truth), then the
    sweep-wide steps. A failure that only results.csv records (an exception, a failed source: no
    result.json) keeps its row; rows of runs outside this sweep (another launch's extra seeds) are kept."""
    workdir = pathlib.Path(workdir).absolute()
    runs = prepare(base, points, workdir)
    keys = swept_keys(points)
    csv_path = workdir / RESULTS
    with results.locked(csv_path):
        old = {r["run_id"]: r for r in results.read_rows(csv_path)}
        mine, found = [], 0
        for rid, point, cfg in runs:
            recorded = durable.read_json(workdir / rid / trainer.RESULT_FILE)
            if isinstance(recorded, dict) and recorded.get("status") in ("done", "failed"):
                mine.append(result_row(rid, point, cfg, keys, trainer.RunResult(**recorded)))
                found += 1
            elif old.get(rid, {}).get("status") == "failed":
                mine.append(old[rid])
        ids = {r[0] for r in runs}
        results.write_rows(csv_path, mine + [r for rid, r in old.items() if rid not in ids])
    left = len(runs) - len(mine)
    echo(f"collected {found} result.json of {len(runs)} runs into {csv_path}"
         + (f"; {left} not finished (relaunch the sweep to run them)" if left else ""))
    return finish_sweep(base, runs, workdir, echo)


class _SweepContext:
    """What training one run of a sweep needs; `run_locked` trains a run whose lock the caller holds."""

    def __init__(self, base, workdir, csv_path, swept_keys, progress, retry_failed, echo, total):
        self.base, self.workdir, self.csv_path, self.swept_keys = base, workdir, csv_path, swept_keys
        self.progress, self.retry_failed, self.echo, self.total = progress, retry_failed, echo, total
        self.cache = trainer.StepCache()
        self.sources: dict[str, tuple[pathlib.Path, str]] = {}
        self.count = 0

    def run_locked(self, run, lock: locks.Lock) -> None:
        try:
            rid = run[0]
            # under the lock: another launch may have finished it since results.csv was read
            if rid not in _recorded(self.csv_path, self.retry_failed):
                self._train(*run)
        finally:
            lock.release()

    def _train(self, rid, point, cfg) -> None:
        run_dir = self.workdir / rid
        run_dir.mkdir(parents=True, exist_ok=True)
        if distributed.is_writer():  # multi-host: process 0 writes, every process trains
            recorded = {**json.loads(cfg.to_json()), "runtime": _runtime(cfg)}
            durable.write_text(run_dir / "config.json", json.dumps(recorded, indent=1))
        t0 = time.time()
        init_path, failure = None, ""
        if cfg.init == "source":
            key = config_lib.config_hash(cfg.source)
            if key not in self.sources:
                self.sources[key] = train_source(config_lib.copy_config(cfg.source), self.workdir, self.cache,
                                                 self.progress, self.echo)
            src, reason = self.sources[key]
            init_path = str(src / "weights")
            failure = f"source run failed: {reason}" if reason else ""
        result = trainer.RunResult("failed", failure, {}) if failure else self._result(rid, point, cfg, init_path)
        row = result_row(rid, point, cfg, self.swept_keys, result)
        row.setdefault("wall_time", round(time.time() - t0, 2))
        if distributed.is_writer():
            results.upsert_row(self.csv_path, row)
        self.count += 1
        metric = result.metrics.get("test_accuracy")
        shown = f"test_accuracy={metric:.4f}" if isinstance(metric, float) else result.reason
        self.echo(f"[{self.count}/{self.total}] {config_lib.run_name(point)}: {result.status} {shown} "
                  f"({row['wall_time']:.1f}s)")

    def _result(self, rid, point, cfg, init_path) -> trainer.RunResult:
        run_dir = self.workdir / rid
        try:
            def train(stop=None):
                return trainer.run(cfg, run_dir, init_path=init_path, cache=self.cache,
                                   wandb_dir=self.workdir / "wandb", group=self.base.name,
                                   name=config_lib.run_name(point), run_id=rid, progress=self.progress,
                                   stop_at_step=stop)

            result = train(interrupts.stop_step(run_dir))  # a stop step only where a test asks for one
            if result.status == "interrupted":
                interrupts.fire(run_dir)  # a signal to this process: it ends here, or is requeued
                result = train()  # its handler let the process go on: the run resumes from its checkpoint
            return result
        except ConfigError as e:
            return trainer.RunResult("failed", str(e), {})
        except Exception as e:  # noqa: BLE001 - a failed run is recorded and the sweep goes on
            if distributed.is_writer():
                (run_dir / "error.txt").write_text(traceback.format_exc())
            return trainer.RunResult("failed", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                                     if str(e) else type(e).__name__, {})


def range_test(base, workdir, *, progress: bool = True, echo=print) -> dict:
    """The LR range test of a sweep's base config into DIR/lr_range_test (training its source model first,
    into the same place the sweep will look for it)."""
    from tl_research.run import lr_range
    workdir = pathlib.Path(workdir).absolute()
    base = config_lib.resolve_source_seed(config_lib.copy_config(base))  # source.seed -1: the base's seed
    config_lib.validate(base)
    config_lib.check_initial_weights(base)
    prepare_workdir(workdir)
    init_path = None
    cache = trainer.StepCache()
    if base.init == "source":
        src, reason = train_source(config_lib.copy_config(base.source), workdir, cache, progress, echo)
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
    with results.locked(csv_path):  # re-read under the lock: other workers may have added rows
        rows = results.read_rows(csv_path)
        for r in rows:
            if r["run_id"] in sims:
                r["domain_similarity"] = sims[r["run_id"]]
        results.write_rows(csv_path, rows)
    if measurer.computed:
        echo(f"domain similarity: {measurer.computed} (source, target) pair(s) measured, {measurer.cached} "
             f"read from {workdir / domain_similarity.CACHE_DIR}")


def _record_transferability(base, runs, workdir, csv_path, echo) -> None:
    """transferability.csv and .md (report.transferability): scored once per (source model, target data) and
    cached in the workdir; a failure is logged and written to transferability_error.txt, the sweep's results
    stand."""
    try:
        transferability_report.for_sweep(base, runs, workdir, results.read_rows(csv_path), echo)
    except Exception as e:  # noqa: BLE001 - the trained runs' results and report still count
        log.warning("transferability scores not computed: %s", e)
        if distributed.is_writer():
            (workdir / "transferability_error.txt").write_text(traceback.format_exc())


def _get(cfg, key):
    node = cfg
    for p in key.split("."):
        node = node[p]
    return node
