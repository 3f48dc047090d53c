"""Running an experiment (its sweep into a workdir) and reporting it (README, plot.png, summary.json under
experiments/<name>/, and the index experiments/README.md), at either scale: the built-in digits
(experiments/<name>/config.py, the committed results) or the paper's (experiments/<name>/paper.py, reported under
runs/experiments_paper/ unless told otherwise)."""
from __future__ import annotations

import dataclasses
import inspect
import json
import pathlib
import time

from tl_research import config as config_lib
from tl_research.analysis import results
from tl_research.sweeps import sweep
from tl_research.core.errors import ConfigError
from tl_research.experiments import readme
from tl_research.experiments.spec import Analysis, Experiment

ROOT = pathlib.Path(__file__).resolve().parents[2] / "experiments"  # the committed tables and plots
SUMMARY = "summary.json"
SCALES = {"digits": "config.py", "paper": "paper.py"}  # --scale -> the config file under experiments/<name>/
PAPER_OUT = pathlib.Path("runs") / "experiments_paper"  # paper scale: OUT/<name>/{README.md,...}, OUT/<name>/runs


def at_scale(exp: Experiment, scale: str, root: pathlib.Path = ROOT) -> Experiment:
    """The experiment with its config at `scale` (digits: its own config, paper: paper.py beside it);
    ConfigError for an unknown scale or an experiment without that file."""
    if scale not in SCALES:
        raise ConfigError("--scale", scale, ", ".join(SCALES))
    if scale == "digits":
        return exp
    if not (pathlib.Path(root) / exp.name / SCALES[scale]).is_file():
        raise ConfigError("--scale", scale, "digits", why=f"{exp.name} has no {SCALES[scale]} under {root}/{exp.name}")
    return dataclasses.replace(exp, config=SCALES[scale])


def default_workdir(exp: Experiment) -> pathlib.Path:
    if exp.config == SCALES["paper"]:
        return PAPER_OUT / exp.name / "runs"
    return pathlib.Path("runs") / "experiments" / exp.name


def default_out(exp: Experiment, root: pathlib.Path = ROOT) -> pathlib.Path:
    """Where the report goes: the committed experiments/ for the digits, runs/experiments_paper/ for paper.py."""
    return PAPER_OUT if exp.config == SCALES["paper"] else pathlib.Path(root)


def load_module(exp: Experiment, root: pathlib.Path = ROOT):
    return config_lib.load_module(str(pathlib.Path(root) / exp.name / exp.config))


def load(exp: Experiment, root: pathlib.Path = ROOT):
    """(base config, sweep points) from experiments/<name>/config.py (or the file exp.config names)."""
    module = load_module(exp, root)
    return module.get_config(), module.get_sweep()


def local_options(jobs: int):
    """launch.py's local launch with `jobs` workers, waited for; on a CPU host the source models train first
    in this process (on a GPU host the workers train them under the source lock: a GPU client here would hold
    memory the workers need)."""
    from tl_research.sweeps import launchers, sweep_job
    return launchers.Options(launcher="local", jobs=jobs, wait=True, sources_first=not sweep_job.accelerator_plugin(),
                             stop_on_interrupt=True)


def run(exp: Experiment, experiments: list[Experiment], *, root: pathlib.Path = ROOT, out=None, workdir=None,
        progress: bool = False, jobs: int = 0, opts=None, echo=print) -> Analysis:
    """The experiment's sweep (resumable: finished runs are skipped), then its report under `out` (default:
    default_out). The wall time is recorded when this call trained every run (a fresh workdir); a resumed or
    finished one keeps the old. opts (a launchers.Options: local workers or SLURM, waited for) decides where
    the runs go; else jobs=0 trains every run in this process and jobs=N in N local workers (local_options):
    a run's row is the same either way."""
    base, points = load(exp, root)
    workdir = pathlib.Path(workdir or default_workdir(exp))
    fresh = not results.read_rows(workdir / sweep.RESULTS)
    t0 = time.time()
    echo(f"{exp.name}: {len(points)} run(s) into {workdir}")
    opts = opts or (local_options(jobs) if jobs else None)
    if opts is not None:
        from tl_research.sweeps import launchers
        launchers.launch(base, points, workdir, opts, echo=echo)
    else:
        sweep.run_sweep(base, points, workdir, progress=progress, echo=echo)
    return report(exp, experiments, root=root, out=out, workdir=workdir, echo=echo,
                  started=t0 if fresh else None, ran_on=host_text(opts))


def host_text(opts=None) -> str:
    """Where a run of the experiments command trained, for its README: SLURM's partition, or this host's cores
    (and its accelerator, named without starting a JAX client here: the workers need its memory)."""
    from tl_research.sweeps import sweep_job
    if opts is not None and opts.launcher == "slurm":
        slurm = opts.slurm or {}
        gpus = f", {slurm['gpus_per_node']} GPU(s) per node" if slurm.get("gpus_per_node") else ""
        return f"SLURM partition {slurm.get('partition') or '(default)'}{gpus}"
    cores = len(sweep_job.host_cpus())
    return f"this host's accelerator ({cores} CPU cores)" if sweep_job.accelerator_plugin() else f"a {cores}-core CPU"


def report(exp: Experiment, experiments: list[Experiment], *, root: pathlib.Path = ROOT, out=None, workdir=None,
           wall_time: float | None = None, echo=print, started: float | None = None, ran_on: str = "") -> Analysis:
    """README.md, plot.png and summary.json of the experiment from the workdir's results under out/<name>/
    (default: default_out), then the index out/README.md. The config is read from root/<name>/. The wall time:
    `wall_time`, else since `started` (time.time() when the sweep began, the analysis included), else the old
    summary's, with `ran_on` (the machine, for the README) recorded beside a new one."""
    module = load_module(exp, root)
    base, points = module.get_config(), module.get_sweep()
    workdir = pathlib.Path(workdir or default_workdir(exp))
    out_root = pathlib.Path(out or default_out(exp, root))
    ids = {config_lib.run_id(p) for p in points}
    rows = [r for r in results.read_rows(workdir / sweep.RESULTS) if r["run_id"] in ids]
    if not rows:
        raise ConfigError("--workdir", str(workdir), f"the workdir `run {exp.name}` filled",
                          why="it holds no results of this experiment")
    out = out_root / exp.name
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyse(exp, rows, workdir, module)
    analysis.plot(out / "plot.png")
    old = read_summary(out)
    if wall_time is None and started is not None:
        wall_time = time.time() - started
    summary = {"name": exp.name, "verdicts": [v.to_dict() for v in analysis.verdicts],
               "headline": analysis.headline or (analysis.verdicts[0].figure if analysis.verdicts else ""),
               "wall_time_s": round(wall_time, 1) if wall_time is not None else old.get("wall_time_s")}
    machine = ran_on if wall_time is not None else old.get("ran_on")  # it goes with the wall time it measured
    if machine:
        summary["ran_on"] = machine
    (out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    sources = source_count(base, points)
    (out / "README.md").write_text(readme.render(exp, analysis, summary, rows, sources=sources,
                                                 differences=differences(exp, module)))
    write_index(experiments, out_root)
    for v in analysis.verdicts:
        echo(v.line())
    return analysis


def analyse(exp: Experiment, rows: list[dict], workdir: pathlib.Path, module) -> Analysis:
    """exp's analysis of its rows, given the config module they come from (what differs at paper scale) when it
    takes one: an analysis written as (rows, workdir) reads the rows alone."""
    takes = inspect.signature(exp.analyse).parameters.values()
    if len(takes) > 2 or any(p.kind == p.VAR_POSITIONAL for p in takes):
        return exp.analyse(rows, workdir, module)
    return exp.analyse(rows, workdir)


def differences(exp: Experiment, module) -> str:
    """What differs from the paper at the module's scale: its DIFFERENCES where it has them; at the paper's scale
    (paper.py) else its docstring, the setting it runs; at the digits' the experiment's own text."""
    if getattr(module, "DIFFERENCES", None):
        return module.DIFFERENCES
    if exp.config == SCALES["paper"] and (module.__doc__ or "").strip():
        return f"The setting of `{exp.config}`:\n\n```\n{module.__doc__.strip()}\n```"
    return exp.differences


def source_count(base, points) -> int:
    """How many source models the sweep trains (distinct source configs of its init=source runs)."""
    configs = (config_lib.apply_overrides(base, p) for p in points)
    return len({config_lib.config_hash(c.source) for c in configs if c.init == "source"})


def read_summary(out: pathlib.Path) -> dict:
    path = pathlib.Path(out) / SUMMARY
    return json.loads(path.read_text()) if path.exists() else {}


def write_index(experiments: list[Experiment], root: pathlib.Path = ROOT) -> None:
    summaries = {e.name: read_summary(pathlib.Path(root) / e.name) for e in experiments}
    (pathlib.Path(root) / "README.md").write_text(readme.index(pathlib.Path(root), experiments, summaries))
