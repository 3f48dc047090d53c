"""The launchers run a sweep to the sequential launch's results: submitit LocalExecutor workers (two launches
at once on one workdir, one worker killed with kill -9 mid-run, one preempted and requeued by submitit), and
the SLURM path through submitit's own SLURM test double (the sbatch script it writes, then each array task
run here as submitit's tests do, one of them timed out, checkpointed and requeued). Interruptions come at a
known step (tl_research.core.interrupts), so every resumed run can be compared with the uninterrupted one."""
import contextlib
import io
import json
import os
import pathlib
import re
import signal
import time
from unittest.mock import patch

import pytest

import launch
from tl_research.core import durable, interrupts, locks
from tl_research.sweeps import job_watch, launchers, slurm_launcher, sweep
from tl_research.analysis import results
from tl_research.sweeps import sweep_job
from tl_research.core.errors import ConfigError
from conftest import transfer_config

def config_text(data_dir) -> str:
    return transfer_config("launch", data_dir, sweep="return axis('frozen_depth', [0, 1, 'all'])", steps=6,
                           eval_every=2, log_every=1, checkpoint_every=2)
RUNS = ["frozen_depth-0", "frozen_depth-1", "frozen_depth-all"]


def _rows(workdir) -> dict:
    return {r["run_id"]: {k: v for k, v in r.items() if k != "wall_time"}
            for r in results.read_rows(pathlib.Path(workdir) / "results.csv")}


def _metrics(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if "wall_time" not in k}
            for line in pathlib.Path(path).read_text().splitlines()]


def _same_as_reference(reference: pathlib.Path, workdir: pathlib.Path) -> None:
    assert _rows(workdir) == _rows(reference) and sorted(_rows(workdir)) == RUNS
    assert all(r["status"] == "done" for r in _rows(workdir).values())
    sources = [f"sources/{d.name}" for d in (reference / "sources").iterdir()]
    for rid in RUNS + sources:
        assert _metrics(workdir / rid / "metrics.jsonl") == _metrics(reference / rid / "metrics.jsonl"), rid
    stale = [p for p in workdir.rglob("*") if durable.TMP_MARK in p.name]
    assert not stale, stale


def _args(config, workdir, *more):
    return ["--config", str(config), "--workdir", str(workdir), "--no_progress", *more]


@pytest.fixture(scope="module")
def sweep_files(tmp_path_factory, data_dir):
    """The config and its uninterrupted, sequential sweep: what every launcher must reproduce."""
    tmp = tmp_path_factory.mktemp("launchers")
    config = tmp / "launch.py"
    config.write_text(config_text(data_dir))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert launch.main(_args(config, tmp / "sequential")) == 0
    (tmp / "sequential.out").write_text(out.getvalue())  # what the launch printed
    return tmp, config, tmp / "sequential"


def _wait_for_exit(pids, deadline_s=600):
    """Waits for the local jobs (children of this process) a launch without --wait left running."""
    end = time.monotonic() + deadline_s
    for pid in pids:
        while time.monotonic() < end:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:  # reaped already (subprocess' own clean-up)
                break
            time.sleep(0.2)


@pytest.mark.long  # two launches of local workers, killed and requeued: about 30 s
def test_local_workers_of_two_launches_reproduce_the_sequential_sweep_through_a_kill_and_a_requeue(
        sweep_files, capsys):
    tmp, config, reference = sweep_files
    work = tmp / "local"
    import jax  # the session's compilation cache (tests/conftest.py), for the workers too
    jobs = min(2, len(os.sched_getaffinity(0)))
    env = {"TL_RESEARCH_CACHE": str(pathlib.Path(jax.config.jax_compilation_cache_dir).parent),
           interrupts.SIGNAL_ENV: "frozen_depth-0@2:USR2,frozen_depth-1@2:KILL"}
    with patch.dict(os.environ, env):
        # launch A submits its workers and returns; launch B, started at once, waits for its own
        assert launch.main(_args(config, work, "--launcher=local", f"--jobs={jobs}")) == 0
        first = capsys.readouterr().out
        assert launch.main(_args(config, work, "--launcher=local", "--jobs=1", "--wait")) == 0
        second = capsys.readouterr().out
    _wait_for_exit([int(p) for p in re.findall(r"local job (\d+)", first)])
    assert "--collect" in first and re.search(r"runs: 3 done, 0 running, 0 queued, 0 failed", second)
    _same_as_reference(reference, work)
    logs = {p.name: p.read_text() for p in (work / "local").glob("*_log.*")}
    text = "\n".join(logs.values())
    assert text.count("training source model") == 1, logs  # once, though three workers started together
    assert len(re.findall(r": done test_accuracy=", text)) == 3, logs  # each run recorded by one worker
    assert "Caught signal SIGUSR2" in text and "Requeued job" in text, logs  # submitit's local requeue
    for rid, sig in (("frozen_depth-0", "USR2"), ("frozen_depth-1", "KILL")):
        assert (work / rid / f".signalled-{sig}").exists()  # the interruption did happen, mid-run
    # --collect rebuilds results.csv from the run folders
    (work / "results.csv").unlink()
    assert launch.main(_args(config, work, "--collect")) == 0
    assert _rows(work) == _rows(reference) and (work / "table.md").exists()


@pytest.fixture
def handlers():
    """submitit's process_job installs its signal handlers in this process, and the job it runs pins the
    process to one core (sweep_job.pin_cpu_run, with its thread variables): put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR2)}
    cores = os.sched_getaffinity(0)
    env = {k: os.environ.get(k) for k in ("XLA_FLAGS", *sweep_job.THREAD_VARIABLES)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    os.sched_setaffinity(0, cores)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_slurm_array_script_and_a_timed_out_task_requeued_to_the_same_results(sweep_files, handlers, capsys):
    from submitit.core import submission, test_core
    tmp, config, reference = sweep_files
    work = tmp / "slurm"
    mock = test_core.MockedSubprocess(known_cmds=["srun", "sbatch"])  # submitit's own SLURM test double
    flags = ["--launcher=slurm", "--slurm.partition=gpu", "--slurm.gpus_per_node=2", "--slurm.timeout_min=1",
             "--slurm.array_parallelism=2", "--slurm.account=lab", "--slurm.extra=--qos=high --constraint=a100"]
    with mock.context():
        assert launch.main(_args(config, work, *flags)) == 0
    out = capsys.readouterr().out
    assert "SLURM job(s) 12: source model" in out and "SLURM job array 13: 3 run(s)" in out and "--collect" in out
    source_sh = (work / "slurm" / "12_submission.sh").read_text()
    array_sh = (work / "slurm" / "13_submission.sh").read_text()
    for line in ("--partition=gpu", "--gpus-per-node=2", "--time=1", "--account=lab", "--qos=high",
                 "--constraint=a100", "--nodes=1", "--ntasks-per-node=1", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in array_sh and f"#SBATCH {line}\n" in source_sh, line
    assert "#SBATCH --array=0-2%2\n" in array_sh and "#SBATCH --dependency=afterany:12\n" in array_sh
    assert f"#SBATCH --output={work / 'slurm'}/%A_%a_0_log.out" in array_sh and "--array" not in source_sh

    requeue = patch("submitit.slurm.slurm.SlurmJobEnvironment._requeue", return_value=None)
    with patch.dict(os.environ, {interrupts.SIGNAL_ENV: "frozen_depth-0@2:USR2"}), requeue as requeued:
        with mock.job_context("12"):
            submission.process_job(work / "slurm")  # the source stage
        for task in ("13_0", "13_1", "13_2"):  # in sweep order: frozen_depth-0 is task 0
            with mock.job_context(task):
                if task == "13_0":
                    with pytest.raises(SystemExit):  # USR2 at step 2: checkpoint(), requeue, exit
                        submission.process_job(work / "slurm")
                    # submitit judged it timed out (1 minute asked): one requeue of MAX_REQUEUES used
                    requeued.assert_called_once_with(slurm_launcher.MAX_REQUEUES - 1)
                    assert not (work / RUNS[0] / "result.json").exists()
                submission.process_job(work / "slurm")  # the (re)queued task resumes its run
    assert capsys.readouterr().out.count("training source model") == 1
    _same_as_reference(reference, work)


def test_a_two_node_slurm_launch_asks_for_one_task_per_node_with_all_its_gpus(sweep_files, capsys):
    """The sbatch script of --slurm.nodes=2 (submitit's SLURM test double); the tasks' start is
    tests/test_scaling.py::test_a_two_node_slurm_run_gives_the_one_process_run."""
    from submitit.core import test_core
    tmp, config, _ = sweep_files
    work = tmp / "slurm_nodes"
    with test_core.MockedSubprocess(known_cmds=["srun", "sbatch"]).context():
        assert launch.main(_args(config, work, "--launcher=slurm", "--slurm.nodes=2",
                                 "--slurm.gpus_per_node=8")) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "on SLURM: 2 node(s) x 8 GPU(s) per run (each job's log names its devices)"
    script = sorted((work / "slurm").glob("*_submission.sh"))[-1].read_text()
    for line in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8"):
        assert f"#SBATCH {line}\n" in script, line
    assert "srun " in script  # submitit starts the job on every task


def test_a_job_that_ends_without_its_runs_is_resubmitted_then_they_are_failed_rows(tmp_path, tiny_config):
    """Real local jobs that die at once (os._exit, as after an OOM kill) on a real workdir and its locks."""
    import submitit
    base = tiny_config()
    points = [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    runs = sweep.prepare(base, points, tmp_path)
    ids = [r[0] for r in runs]
    executor = submitit.LocalExecutor(folder=tmp_path / "local")
    submitted = []

    def submit(run_ids):
        submitted.append(list(run_ids))
        return executor.submit(os._exit, 3)

    held = locks.Lock(locks.lock_path(tmp_path, "run", ids[2]))
    assert held.try_acquire()  # seed 2 is being trained by a live worker elsewhere: never failed here
    slots = [job_watch.Slot("worker 0", ids[:2], submit(ids[:2]), submit),
             job_watch.Slot("worker 1", ids[2:], submit(ids[2:]), submit)]
    lines = []
    job_watch.wait(slots, tmp_path, runs, sweep.swept_keys(points), poll_s=0.05, retries=1, echo=lines.append)
    held.release()
    rows = {r["run_id"]: r for r in results.read_rows(tmp_path / "results.csv")}
    assert sorted(rows) == ids[:2] and all(r["status"] == "failed" for r in rows.values())
    assert "ended without recording it" in rows[ids[0]]["reason"] and "2 attempts" in rows[ids[0]]["reason"]
    assert submitted.count(ids[:2]) == 2 and any("resubmitted 2 run(s)" in line for line in lines), lines
    assert rows[ids[0]]["seed"] == "0"  # the swept values, as the sequential launch writes them


def test_device_slices():
    assert launchers.device_slices("gpu", list(range(8)), 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert launchers.device_slices("gpu", list(range(8)), 8) == [[i] for i in range(8)]
    assert launchers.device_slices("cpu", [0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3, 4]]
    with pytest.raises(ConfigError, match=r"--jobs=9 is not allowed .*allowed: 1 to 8, the GPUs of this host"):
        launchers.device_slices("gpu", list(range(8)), 9)
    with pytest.raises(ConfigError, match="--jobs=3"):
        launchers.device_slices("cpu", [0, 1], 3)


def test_a_local_worker_sees_only_its_gpus(tmp_path):
    """What a worker on GPUs 4 and 5 of an 8-GPU host is given, in a real submitit local job (no GPU is
    needed to read its environment)."""
    import submitit
    executor = submitit.LocalExecutor(folder=tmp_path)
    executor.update_parameters(**launchers.worker_parameters("gpu", [4, 5]))
    assert executor.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == "4,5"
    executor.update_parameters(**launchers.worker_parameters("cpu", [0]))
    assert executor.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() == ""  # its cores come by affinity


def test_a_one_core_worker_is_pinned_with_single_threaded_libraries(tmp_path):
    """sweep_job.pin: the affinity, the thread counts (never raised above what the environment asks), and on
    one core XLA's single-threaded Eigen flag, which the installed jaxlib accepts (an unknown flag is fatal)."""
    import subprocess
    import sys
    from tl_research.sweeps import sweep_job
    cores = sorted(os.sched_getaffinity(0))
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "8", "XLA_FLAGS": "--xla_cpu_use_xnnpack=true"}
    sweep_job.pin(cores, env)  # this process keeps its cores
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == str(len(cores))
    assert env["OPENBLAS_NUM_THREADS"] == str(len(cores))
    assert ("multi_thread_eigen" in env["XLA_FLAGS"]) == (len(cores) == 1)
    code = ("import os; from tl_research.sweeps import sweep_job; sweep_job.pin([%d]); import jax, jax.numpy as jnp; "
            "print(sorted(os.sched_getaffinity(0)), os.environ['OMP_NUM_THREADS'], os.environ['XLA_FLAGS'], "
            "float(jnp.ones((8, 8)).sum()))" % cores[-1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=launchers.ROOT,
                         env={k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "OMP_NUM_THREADS")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [f"[{cores[-1]}]", "1", "--xla_cpu_multi_thread_eigen=false", "64.0"]


def test_slurm_options():
    assert slurm_launcher.extra_parameters("--qos=high, --exclusive --mem-per-gpu=40G") == {
        "qos": "high", "exclusive": True, "mem_per_gpu": "40G"}
    assert slurm_launcher.partitions("gpu*\ncpu\n  \n") == ["cpu", "gpu"]
    p = slurm_launcher.parameters({"partition": "a", "timeout_min": 30}, "sweep")
    assert p["partition"] == "a" and p["time"] == 30 and p["nodes"] == 1 and "account" not in p
    with patch("shutil.which", return_value="/usr/bin/sinfo"), \
            patch.object(slurm_launcher, "_sinfo", return_value="gpu*\ncpu\n"):
        slurm_launcher.check({"partition": "gpu"})
        with pytest.raises(ConfigError, match=r"--slurm.partition='gpuu' .* one of this cluster's: cpu, gpu"):
            slurm_launcher.check({"partition": "gpuu"})
        slurm_launcher.check({"nodes": 2})  # a run across two nodes: one task per node
    p = slurm_launcher.parameters({"nodes": 2, "gpus_per_node": 8}, "sweep")
    assert p["nodes"] == 2 and p["ntasks_per_node"] == 1 and p["gpus_per_node"] == 8
    assert launchers.collect_args(["--config", "c.py", "--launcher", "slurm", "--jobs=2", "--wait",
                                   "--slurm.partition=gpu", "--workdir", "w"]) == ["--config", "c.py",
                                                                                   "--workdir", "w"]


@pytest.mark.parametrize("flags, needle", [
    (["--launcher=slurm"], "--launcher='slurm' is not allowed (no sbatch on this machine's PATH)"),
    (["--launcher=local", "--jobs=64"], "--jobs=64 is not allowed (2 CPU cores to share out)"),
    (["--slurm.partition=gpu"], "--slurm.partition='gpu' is not allowed; allowed: --slurm.* flags with --launcher"),
    (["--run=frozen_depth-7"], "--run='frozen_depth-7' is not allowed; allowed: a run id of this sweep"),
    (["--shard=2/2"], "--shard='2/2' is not allowed; allowed: I/N with 0 <= I < N"),
])
def test_launcher_input_errors_are_one_line_before_anything_runs(sweep_files, tmp_path, capsys, flags, needle):
    if "--jobs=64" in flags:
        needle = needle.replace("2 CPU cores", f"{len(os.sched_getaffinity(0))} CPU cores")
    _, config, _ = sweep_files
    assert launch.main(_args(config, tmp_path / "w", *flags)) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "w" / "local").exists() and not (tmp_path / "w" / "results.csv").exists()


def test_run_and_shard_select_runs(sweep_files, tmp_path, capsys):
    """--shard and --run record only the runs they select (the run folders are the reference's: each
    run's recorded result.json is read back, nothing is trained)."""
    import shutil
    _, config, reference = sweep_files
    work = tmp_path / "w"
    shutil.copytree(reference, work)
    (work / "results.csv").unlink()
    assert launch.main(_args(config, work, "--shard=1/2")) == 0
    assert sorted(_rows(work)) == [RUNS[1]]
    assert launch.main(_args(config, work, f"--run={RUNS[0]}", f"--run={RUNS[2]}")) == 0
    assert "--collect" in capsys.readouterr().out
    assert _rows(work) == _rows(reference)


@pytest.mark.long  # the quickstart's baseB in one process and on a one-core worker: about 55 s
def test_a_cpu_run_has_the_same_numbers_in_one_process_and_on_a_one_core_worker(tmp_path):
    """The reproducibility contract on a CPU (sweep_job.pin_cpu_run): `python launch.py --jobs=0` and a local
    worker each train a run on one core, so their losses agree bit for bit. The run is the quickstart's baseB
    at the quickstart's size, where XLA's CPU reductions split over the cores a process may use: trained on
    two cores, its losses differ from one core's in the last digits."""
    import subprocess
    import sys
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: nothing to split")
    rid = "frozen_depth-0__init-scratch__schedule.name-constant__seed-0"
    base = [sys.executable, "launch.py", f"--run={rid}", "--config.train.steps=12", "--config.train.eval_every=6",
            "--no_progress"]
    for name, more in (("here", ["--jobs=0"]), ("worker", ["--launcher=local", "--jobs=2", "--wait"])):
        out = subprocess.run(base + [f"--workdir={tmp_path / name}", *more], cwd=launchers.ROOT,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    here, worker = (_metrics(tmp_path / n / rid / "metrics.jsonl") for n in ("here", "worker"))
    assert len(here) >= 3 and any("val_loss" in m for m in here)
    assert here == worker


def test_a_workdir_on_an_object_store_mount_is_refused_before_anything_runs(sweep_files, tmp_path, capsys,
                                                                             monkeypatch):
    """gcsfuse (a TPU pod's usual bucket mount): rename is not atomic and flock is per machine."""
    tmp, config, _ = sweep_files
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nmy-bucket /mnt/gcs fuse.gcsfuse rw,nosuid 0 0\n")
    assert durable.filesystem_type("/mnt/gcs/runs/new", mounts) == "fuse.gcsfuse"
    assert durable.filesystem_type("/mnt/gcsx/runs", mounts) == "ext4"
    monkeypatch.setattr(durable, "filesystem_type", lambda path, mounts="/proc/mounts": "fuse.gcsfuse")
    assert launch.main(_args(config, tmp_path / "w")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --workdir=") and "it is on fuse.gcsfuse" in err and err.count("\n") == 1
    assert not (tmp_path / "w").exists()


def test_a_launch_says_what_it_runs_on_first_and_every_run_records_it(sweep_files, tmp_path, capsys):
    tmp, config, reference = sweep_files
    first = (tmp / "sequential.out").read_text().splitlines()[0]
    assert first.startswith("on cpu: 1 x cpu, 1 process, mesh data=1 (jax "), first
    for rid in RUNS:
        for name in ("config.json", "result.json", "timing.json"):
            rec = json.loads((reference / rid / name).read_text())["runtime"]
            assert rec["platform"] == "cpu" and rec["devices"] == rec["processes"] == 1, (rid, name)
            assert rec["mesh"] == {"data": 1}
    # the record is not the config: relaunching the same sweep on (a copy of) its workdir finds every run done
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    assert launch.main(_args(config, copy)) == 0
    assert "3 of 3 runs already in" in capsys.readouterr().out


def test_collect_wait_follows_the_runs_until_each_is_recorded(tmp_path, monkeypatch):
    """`launch.py ... --collect --wait` (job_watch.follow): the progress line until no run is running or
    queued; here a run held by another process finishes while it waits."""
    lines, looks = [], []
    states = iter([{"done": 1, "running": 1, "queued": 0, "failed": 0}] * 2
                  + [{"done": 2, "running": 0, "queued": 0, "failed": 0}])

    def counts(workdir, ids):
        looks.append(ids)
        return next(states)

    monkeypatch.setattr(job_watch, "counts", counts)
    job_watch.follow(tmp_path, ["a", "b"], poll_s=0, echo=lines.append)
    assert lines == ["runs: 1 done, 1 running, 0 queued, 0 failed", "runs: 2 done, 0 running, 0 queued, 0 failed"]
    assert len(looks) == 3
    launchers_note = launchers.background_note(
        launchers.Options(launcher="local", jobs=2, argv=["--config", "c.py"]), tmp_path,
        [job_watch.Slot("w0", [], type("Job", (), {"job_id": "4711"})(), None),
         job_watch.Slot("w1", [], type("Job", (), {"job_id": "4712"})(), None)], 24)
    assert launchers_note == (f"24 run(s) go on in the background in 2 local worker process(es) (pid 4711, 4712), "
                              f"after this command returns (logs: {tmp_path / 'local'}/); to follow them and write "
                              f"the report when they end: python launch.py --config c.py --collect --wait")
