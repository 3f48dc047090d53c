"""A workdir survives any crash and any second launch: killed at every write point (right before and right
after each rename, by tl_research.core.durable's TL_RESEARCH_CRASH_AT hook, a real os._exit) and relaunched, or
with its marker files torn, or shared by two launches at once, a sweep ends with the uninterrupted run's
results and metrics, no stale temporaries, and every run trained once.

The launches run in children forked from one helper process (tests/forked_launches.py), so the crash chain
costs one Python and JAX start-up, not one per crash."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

import launch
from tl_research.core import durable
from tl_research.analysis import results
from conftest import transfer_config

# a sweep launched once per write point, killed there, then relaunched (the module's fixture): about a minute
pytestmark = pytest.mark.long

ROOT = pathlib.Path(__file__).resolve().parents[1]

def config_text(data_dir, depths) -> str:
    return transfer_config("crash", data_dir, sweep=f"return axis('frozen_depth', {depths!r})", steps=4,
                           eval_every=2, log_every=1, checkpoint_every=2)

# Every write point of a sweep, in the order a sweep first reaches them: each launch of the chain dies at
# its point, the next one resumes from what it left and dies at the next point. Right before the rename
# where an older version of the file exists to be kept (and a temporary to be cleaned up); right after it
# everywhere (for a new file, dying before its rename is dying after the previous point's, plus a temporary).
CHAIN = ["workdir.json:after", "config.json:after", "metrics.jsonl:before", "metrics.jsonl:after",
         "best/meta.json:before", "best/meta.json:after", "weights/meta.json:after", "result.json:before",
         "result.json:after", "results.csv:before", "results.csv:after"]


def _launches(tmp_path, plan) -> list[list[int]]:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    import jax  # the session's compilation cache (tests/conftest.py): these launches compile what others did
    cache = pathlib.Path(jax.config.jax_compilation_cache_dir).parent
    env = {**os.environ, "TL_RESEARCH_CACHE": str(cache), "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "forked_launches.py"), str(plan_file)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _job(config, workdir, log, crash=""):
    return {"argv": ["--config", str(config), "--workdir", str(workdir), "--no_progress"],
            "env": {durable.CRASH_ENV: crash} if crash else {}, "log": str(log)}


def _rows(workdir) -> dict:
    return {r["run_id"]: {k: v for k, v in r.items() if k != "wall_time"}
            for r in results.read_rows(workdir / "results.csv")}


def _metrics(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if "wall_time" not in k}
            for line in pathlib.Path(path).read_text().splitlines()]


def _same_workdirs(a: pathlib.Path, b: pathlib.Path) -> None:
    assert _rows(a) == _rows(b) and len(_rows(a)) == 2
    assert all(r["status"] == "done" for r in _rows(a).values())
    for rid in [*_rows(a), *(f"sources/{d.name}" for d in (a / "sources").iterdir())]:
        assert _metrics(a / rid / "metrics.jsonl") == _metrics(b / rid / "metrics.jsonl"), rid
    stale = [p for p in b.rglob("*") if durable.TMP_MARK in p.name or p.name.startswith(".results-")]
    assert not stale, stale


@pytest.fixture(scope="module")
def chain(tmp_path_factory, data_dir):
    """One helper process: the uninterrupted sweep, the crash chain on another workdir, then two launches
    started together on a third."""
    tmp = tmp_path_factory.mktemp("crash")
    config = tmp / "crash.py"
    config.write_text(config_text(data_dir, [0, "all"]))
    wide = tmp / "wide.py"  # more runs than one launch takes at a time, for the two concurrent launches
    wide.write_text(config_text(data_dir, [0, 1, 2, "all"]))
    plan = [[_job(config, tmp / "whole", tmp / "whole.log")]]
    plan += [[_job(config, tmp / "crashed", tmp / f"crash{i}.log", crash)] for i, crash in enumerate(CHAIN)]
    plan += [[_job(config, tmp / "crashed", tmp / "final.log")]]
    plan += [[_job(wide, tmp / "shared", tmp / "shared_a.log"), _job(wide, tmp / "shared", tmp / "shared_b.log")]]
    return tmp, _launches(tmp, plan)


def test_a_sweep_killed_at_every_write_point_ends_as_the_uninterrupted_one(chain):
    tmp, codes = chain
    assert codes[0] == [0] and codes[len(CHAIN) + 1] == [0]
    crashed = dict(zip(CHAIN, (c[0] for c in codes[1:len(CHAIN) + 1])))
    assert all(c == durable.CRASH_EXIT for c in crashed.values()), crashed  # each launch died at its point
    _same_workdirs(tmp / "whole", tmp / "crashed")


def test_two_launches_on_one_workdir_train_each_run_once(chain):
    tmp, codes = chain
    assert codes[-1] == [0, 0]
    shared = tmp / "shared"
    rows = results.read_rows(shared / "results.csv")
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    logs = [(tmp / f"shared_{w}.log").read_text() for w in "ab"]
    trained = [line for log in logs for line in log.splitlines() if ": done test_accuracy=" in line]
    assert len(trained) == 4, logs  # each run trained by one of the two launches, none twice
    assert sum("training source model" in log for log in logs) == 1, logs
    for r in rows:
        events = [m.get("event") for m in _metrics(shared / r["run_id"] / "metrics.jsonl")]
        assert events.count("start") == events.count("end") == 1


def test_torn_markers_read_as_absent_and_the_relaunch_redoes_their_step(chain, tmp_path, capsys):
    tmp, _ = chain
    import shutil
    work = tmp_path / "torn"
    shutil.copytree(tmp / "whole", work)
    rows = results.read_rows(work / "results.csv")
    last = work / rows[-1]["run_id"]
    source = next((work / "sources").iterdir())
    for path in (last / "result.json", source / "result.json", last / "config.json", work / "workdir.json",
                 last / "best" / "meta.json", work / "results.csv", last / "metrics.jsonl"):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 25])  # cut short, as by a disk that lost the file's end
    assert launch.main(["--config", str(tmp / "crash.py"), "--workdir", str(work), "--no_progress"]) == 0
    _same_workdirs(tmp / "whole", work)
