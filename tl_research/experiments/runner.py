"""Running an experiment (its sweep into a workdir) and reporting it (README, plot.png, summary.json under
experiments/<name>/, and the index experiments/README.md)."""
from __future__ import annotations

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


def default_workdir(exp: Experiment) -> pathlib.Path:
    return pathlib.Path("runs") / "experiments" / exp.name


def load(exp: Experiment, root: pathlib.Path = ROOT):
    """(base config, sweep points) from experiments/<name>/config.py."""
    module = config_lib.load_module(str(pathlib.Path(root) / exp.name / exp.config))
    return module.get_config(), module.get_sweep()


def run(exp: Experiment, experiments: list[Experiment], *, root: pathlib.Path = ROOT, workdir=None,
        progress: bool = False, jobs: int = 0, echo=print) -> Analysis:
    """The experiment's sweep (resumable: finished runs are skipped), then its report. The wall time is
    recorded when this call trained every run (a fresh workdir); a resumed or finished one keeps the old.
    jobs=0 trains every run in this process; jobs=N trains the source models here, then the runs in N local
    one-core workers (launch.py's default launch): a run's row is the same either way."""
    base, points = load(exp, root)
    workdir = pathlib.Path(workdir or default_workdir(exp))
    fresh = not results.read_rows(workdir / sweep.RESULTS)
    t0 = time.time()
    echo(f"{exp.name}: {len(points)} run(s) into {workdir}")
    if jobs:
        from tl_research.sweeps import launchers
        opts = launchers.Options(launcher="local", jobs=jobs, wait=True, sources_first=True, stop_on_interrupt=True)
        launchers.launch(base, points, workdir, opts, echo=echo)
    else:
        sweep.run_sweep(base, points, workdir, progress=progress, echo=echo)
    wall = time.time() - t0 if fresh else None
    return report(exp, experiments, root=root, workdir=workdir, wall_time=wall, echo=echo)


def report(exp: Experiment, experiments: list[Experiment], *, root: pathlib.Path = ROOT, workdir=None,
           wall_time: float | None = None, echo=print) -> Analysis:
    """README.md, plot.png and summary.json of the experiment from the workdir's results, then the index."""
    base, points = load(exp, root)
    workdir = pathlib.Path(workdir or default_workdir(exp))
    ids = {config_lib.run_id(p) for p in points}
    rows = [r for r in results.read_rows(workdir / sweep.RESULTS) if r["run_id"] in ids]
    if not rows:
        raise ConfigError("--workdir", str(workdir), f"the workdir `run {exp.name}` filled",
                          why="it holds no results of this experiment")
    out = pathlib.Path(root) / exp.name
    analysis = exp.analyse(rows, workdir)
    analysis.plot(out / "plot.png")
    old = read_summary(out)
    summary = {"name": exp.name, "verdicts": [v.to_dict() for v in analysis.verdicts],
               "headline": analysis.headline or (analysis.verdicts[0].figure if analysis.verdicts else ""),
               "wall_time_s": round(wall_time, 1) if wall_time is not None else old.get("wall_time_s")}
    (out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    sources = source_count(base, points)
    (out / "README.md").write_text(readme.render(exp, analysis, summary, rows, sources=sources))
    write_index(experiments, root)
    for v in analysis.verdicts:
        echo(v.line())
    return analysis


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
