"""Scaling out: batch sizes checked against the devices, FSDP on 8 simulated devices, every shipped config on 8
devices and bfloat16 (long checks: `python -m pytest -m long`), two processes on localhost and gradient
accumulation.

The multi-device checks run in subprocesses (XLA_FLAGS=--xla_force_host_platform_device_count=8; two processes
joined by jax.distributed on 127.0.0.1 with JAX's CPU collectives); the 1-device references run here.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tl_research import config as config_lib
from tl_research.core import sharding
from tl_research.run import trainer
from tl_research.core.errors import ConfigError
from tl_research.core.tracking import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the reference run: width 16 so that the conv kernels are large enough for FSDP to shard; an eval batch of 50
# and a validation split (sklearn_digits 0-4) that 8 devices do not divide
REFERENCE = {"model.width": 16, "model.dropout": 0.2, "data.eval_batch_size": 50}


def _env(devices: int) -> dict:
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
                # the session's compilation cache (conftest), so that the subprocesses share compiled steps
                WANDB_MODE="disabled", TL_RESEARCH_CACHE=str(pathlib.Path(jax.config.jax_compilation_cache_dir).parent))


def _losses(run_dir) -> list[float]:
    return [r["train_loss"] for r in read_metrics(pathlib.Path(run_dir) / "metrics.jsonl") if "train_loss" in r]


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """The 1-device run the sharded and multi-process runs must reproduce."""
    from conftest import tiny
    d = tmp_path_factory.mktemp("reference") / "run"
    result = trainer.run(tiny(data_dir, **REFERENCE), d, progress=False)
    assert result.status == "done", result.reason
    return result, _losses(d)


# ---------------------------------------------------------------------------------------------- validation

def test_a_batch_the_devices_cannot_split_is_refused_in_validation_with_the_nearest_sizes(tiny_config):
    cfg = tiny_config(**{"data.batch_size": 50})
    with pytest.raises(ConfigError, match=r"data.batch_size=50 .*8 data-parallel devices.*nearest: 48 and 56"):
        sharding.check(cfg, num_devices=8)
    cfg = tiny_config(**{"data.batch_size": 48, "train.accumulate": 4})  # 48 = 8 x 6, not 8 x 4 x k
    with pytest.raises(ConfigError, match=r"data.batch_size=48 .*x train.accumulate=4.*nearest: 32 and 64"):
        sharding.check(cfg, num_devices=8)
    sharding.check(tiny_config(**{"data.batch_size": 48, "data.eval_batch_size": 250}), num_devices=8)
    for key, value, match in (("mesh", (("data", 3), ("fsdp", -1)), "3 does not divide 8"),
                              ("mesh", (("model", -1),), "axes from data, fsdp"),
                              ("sharding", ((".*", "shard"),), "unknown rule 'shard'"),
                              ("precision", "float16", "float32, bfloat16"),
                              ("train.accumulate", 0, "whole number >= 1")):
        with pytest.raises(ConfigError, match=match):
            sharding.check(tiny_config(**{key: value}), num_devices=8)


def test_sharding_rules_first_match_wins_and_every_parameter_needs_one():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "fsdp"))
    shapes = {"units.1.mlp.fc1.kernel": (768, 3072), "units.1.norm1.scale": (768,), "head.classifier.kernel": (768, 5)}
    assert sharding.fsdp_spec((768, 3072), 8) == jax.sharding.PartitionSpec(None, "fsdp")  # the largest dim
    assert sharding.fsdp_spec((3, 3, 64, 64), 8) == jax.sharding.PartitionSpec(None, None, None, "fsdp")
    assert sharding.fsdp_spec((768,), 8) == jax.sharding.PartitionSpec()  # small: replicated
    assert sharding.fsdp_spec((7, 1001, 3), 8) == jax.sharding.PartitionSpec()  # nothing 8 divides
    out = sharding.param_shardings(shapes, ((r"^head\.", "replicate"), (".*", "fsdp")), mesh)
    assert set(out) == set(shapes)
    with pytest.raises(ConfigError, match=r"config.sharding=.*no rule covers parameter units.1.mlp.fc1.kernel"):
        sharding.param_shardings(shapes, ((r"^head\.", "replicate"), (r"norm", "fsdp")), mesh)


# ---------------------------------------------------------------------------------------------- 8 devices

_EIGHT = r"""
import glob, json, pathlib, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import jax, numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from conftest import tiny
from tl_research import config as C
from tl_research.run import loop, trainer
out, data_dir = pathlib.Path({out!r}), {data!r}
cache = trainer.StepCache()
trainer.enable_compilation_cache()
info = {{"devices": jax.device_count()}}

# FSDP: data=2 x fsdp=4, the whole run, and a run killed at step 6 and resumed
fsdp = tiny(data_dir, **{reference!r}, mesh=(("data", 2), ("fsdp", 4)), sharding=((r"^head\.", "replicate"), (".*", "fsdp")))
whole = trainer.run(fsdp, out / "fsdp", progress=False, cache=cache)
part = trainer.run(fsdp, out / "resumed", progress=False, cache=cache, stop_at_step=6)
resumed = trainer.run(fsdp, out / "resumed", progress=False, cache=cache)
info.update(whole=whole.metrics, status=[whole.status, part.status, resumed.status], resumed=resumed.metrics)
t = loop.Training(fsdp, out / "inspect", None, cache)
t.restore()
leaves = {{k: v for k, v in t.state["params"].items()}}
leaves.update({{f"opt.{{i}}": v for i, v in enumerate(jax.tree.leaves(t.state["opt_state"])) if v.ndim == 4}})
info["shares"] = {{k: [s.data.size / v.size for s in v.addressable_shards] for k, v in leaves.items()
                  if "fsdp" in str(v.sharding.spec)}}

# frozen-prefix feature caching, the batches of cached activations sharded over the 8 devices
cached = trainer.run(tiny(data_dir, **{reference!r}, frozen_depth=2), out / "cached", progress=False, cache=cache)
info.update(cached=cached.metrics)

print(json.dumps(info))
"""

_CONFIGS = r"""
import glob, json, pathlib, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import jax, numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from conftest import tiny
from tl_research import config as C
from tl_research.run import loop, trainer
out, data_dir = pathlib.Path({out!r}), {data!r}
cache = trainer.StepCache()
trainer.enable_compilation_cache()
info = {{"devices": jax.device_count()}}

# every shipped config: the first run of its sweep, one step and the evaluation after it
photos = out / "photos"
digits = load_digits()
for c in range(3):
    (photos / f"class{{c}}").mkdir(parents=True)
    for i, img in enumerate(digits.images[digits.target == c][:16]):
        Image.fromarray((img * 16).astype(np.uint8)).save(photos / f"class{{c}}" / f"{{i}}.png")
statuses = {{}}
paths = sorted(glob.glob({configs!r}), key=lambda p: "frozen_depth_folder" in p)  # it starts from quickstart's
for path in paths:
    name = pathlib.Path(path).stem
    arg = [f"{{photos}},{{out / 'quickstart'}}"] if name == "frozen_depth_folder" else []
    module = C.load_module(path)
    base = module.get_config(*arg)
    cfg = C.apply_overrides(base, module.get_sweep(*arg)[0] if hasattr(module, "get_sweep") else {{}})
    over = {{"train.steps": 1, "train.eval_every": 1, "wandb.mode": "disabled", "data.data_dir": data_dir,
            "schedule.warmup_steps": 0, "schedule.warmup_epochs": 0.0}}
    # the source run is validated with the run (its batch sizes against these 8 devices too), not trained:
    # the sources are the same small network on the same data as the runs
    cfg = C.apply_overrides(cfg, {{**over, "init": "scratch" if cfg.init == "source" else cfg.init}})
    if base.init == "source":
        C.validate(C.apply_overrides(base.source, over))
    C.validate(cfg)
    run_dir = out / name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(cfg.to_json())  # as the sweep writes it
    r = trainer.run(cfg, run_dir, progress=False, cache=cache)
    # the task's validation metric: accuracy, or mIoU / mAP for the segmentation and detection configs
    statuses[name] = [r.status, r.reason, next((r.metrics[k] for k in ("val_accuracy", "val_miou", "val_map")
                                               if k in r.metrics), None)]
info["configs"] = statuses
print(json.dumps(info))
"""


def _on_eight_devices(template: str, data_dir, tmp_path) -> dict:
    """The script `template` in a subprocess with 8 simulated devices: the dict it prints last."""
    script = template.format(root=str(ROOT), tests=str(ROOT / "tests"), data=data_dir, out=str(tmp_path),
                             reference=REFERENCE, configs=str(ROOT / "configs" / "*.py"))
    out = subprocess.run([sys.executable, "-c", script], env=_env(8), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fsdp_on_eight_devices(reference, data_dir, tmp_path):
    info = _on_eight_devices(_EIGHT, data_dir, tmp_path)
    assert info["devices"] == 8 and info["status"] == ["done", "interrupted", "done"]
    one, one_losses = reference
    # the same losses as one device, and the same evaluation (eval batch 50 -> 56 on 8 devices, 6 rows masked)
    assert len(one.metrics) and len(_losses(tmp_path / "fsdp")) == len(one_losses) == 6
    np.testing.assert_allclose(_losses(tmp_path / "fsdp"), one_losses, rtol=0, atol=1e-5)
    for key in ("val_accuracy", "test_accuracy", "best_step"):
        assert info["whole"][key] == one.metrics[key], key
    for key in ("val_loss", "test_loss"):
        assert info["whole"][key] == pytest.approx(one.metrics[key], abs=1e-5), key
    # resumed after a kill, sharded: ends where the uninterrupted run does
    for key in ("val_accuracy", "test_accuracy", "test_loss", "best_step"):
        assert info["resumed"][key] == info["whole"][key], key
    np.testing.assert_allclose(_losses(tmp_path / "resumed"), _losses(tmp_path / "fsdp"), rtol=0, atol=1e-6)
    # each device holds a quarter of every sharded tensor, parameters and their momentum alike
    shares = info["shares"]
    assert len([k for k in shares if k.startswith("units.")]) >= 4 and any(k.startswith("opt.") for k in shares)
    assert all(s == [0.25] * 8 for s in shares.values()), shares
    # a cached run on 8 devices: the 1-device run from the images
    images = tmp_path / "images"
    from conftest import tiny
    one_images = trainer.run(tiny(data_dir, **REFERENCE, frozen_depth=2, **{"train.feature_cache": False}), images,
                             progress=False)
    assert info["cached"]["feature_path"] == "cached@2" and one_images.metrics["feature_path"] == "input"
    np.testing.assert_allclose(_losses(tmp_path / "cached"), _losses(images), rtol=0, atol=1e-5)
    for key in ("val_accuracy", "test_accuracy", "best_step"):
        assert info["cached"][key] == one_images.metrics[key], key


@pytest.mark.long  # every shipped config compiled for 8 devices: about a minute (python -m pytest -m long)
def test_every_shipped_config_trains_a_step_and_evaluates_on_eight_devices(data_dir, tmp_path):
    info = _on_eight_devices(_CONFIGS, data_dir, tmp_path)
    assert info["devices"] == 8
    names = {p.stem for p in (ROOT / "configs").glob("*.py")}
    assert set(info["configs"]) == names
    for run, (status, reason, val_accuracy) in info["configs"].items():
        assert status == "done" and 0 <= val_accuracy <= 1, (run, reason)


# ---------------------------------------------------------------------------------------------- two processes

_CONFIG_FILE = """
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny


def get_config():
    return tiny({data!r}, **{reference!r})
"""

_PROCESS = r"""
import os, sys
sys.path.insert(0, {root!r})
os.chdir({root!r})
from tl_research.core import distributed
distributed.initialize("127.0.0.1:{port}", 2, {pid})
import launch
from tl_research import config as C
from tl_research.run import trainer
trainer.enable_compilation_cache()  # as launch.py does: the resumed run below loads the steps compiled here
# killed after step 6 (its last checkpoint: step 4), then docs/clusters.md's command resumes it
cfg = C.load_module({config!r}).get_config()
trainer.run(cfg, {workdir!r} + "/run", progress=False, stop_at_step=6)
sys.exit(launch.main(["--config", {config!r}, "--workdir", {workdir!r}, "--no_progress",
                      "--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id={pid}"]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_run_and_write_one_set_of_outputs(reference, data_dir, tmp_path):
    config = tmp_path / "two.py"
    config.write_text(_CONFIG_FILE.format(tests=str(ROOT / "tests"), data=data_dir, reference=REFERENCE))
    workdir, port = tmp_path / "runs", _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS.format(
        root=str(ROOT), port=port, pid=i, config=str(config), workdir=str(workdir))], env=_env(1),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:  # one process failing leaves the other waiting for it
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "test_accuracy" in outs[0][0] and "test_accuracy" not in outs[1][0]  # process 0 prints the table
    one, one_losses = reference
    rows = read_metrics(workdir / "run" / "metrics.jsonl")
    steps = [r["step"] for r in rows if "train_loss" in r]
    assert steps == sorted(set(steps)) and len(steps) == 6  # one writer: each step logged once
    np.testing.assert_allclose(_losses(workdir / "run"), one_losses, rtol=0, atol=1e-5)
    result = json.loads((workdir / "run" / trainer.RESULT_FILE).read_text())
    for key in ("val_accuracy", "test_accuracy", "best_step"):
        assert result["metrics"][key] == one.metrics[key], key
    assert len((workdir / "results.csv").read_text().strip().splitlines()) == 2  # the header and one row


_SLURM_TASK = r"""
import os, sys
sys.path.insert(0, {root!r})
os.chdir({root!r})
from tl_research import config as C
from tl_research.sweeps import sweep_job
cfg = C.load_module({config!r}).get_config()
print(sweep_job.SweepJob(cfg, [{{}}], {workdir!r}, ["run"])())
"""


@pytest.mark.long  # two SLURM-launched processes, then the comparison: about 20 s
def test_a_two_node_slurm_run_gives_the_one_process_run(reference, data_dir, tmp_path):
    """--slurm.nodes=2: the job's two tasks (here two local processes with the SLURM environment srun gives
    one task per node) join through JAX's SLURM detection (distributed.initialize) and train one run to the
    one-process losses; process 0 writes it and its log names the two processes."""
    config = tmp_path / "two_nodes.py"
    config.write_text(_CONFIG_FILE.format(tests=str(ROOT / "tests"), data=data_dir, reference=REFERENCE))
    workdir, port = tmp_path / "runs", _free_port()
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_NTASKS": "2",
             "SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "JAX_COORDINATOR_PORT": str(port)}
    procs = [subprocess.Popen([sys.executable, "-c", _SLURM_TASK.format(
        root=str(ROOT), config=str(config), workdir=str(workdir))], env={**_env(1), **slurm, "SLURM_PROCID": str(i)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "on cpu: 2 x cpu, 2 processes" in outs[0][0] and "{'run': 'done'}" in outs[0][0], outs[0][0][-2000:]
    one, one_losses = reference
    np.testing.assert_allclose(_losses(workdir / "run"), one_losses, rtol=0, atol=1e-5)
    result = json.loads((workdir / "run" / trainer.RESULT_FILE).read_text())
    assert result["runtime"]["processes"] == 2 and result["runtime"]["devices"] == 2
    for key in ("val_accuracy", "test_accuracy", "best_step"):
        assert result["metrics"][key] == one.metrics[key], key


def test_a_slurm_task_sees_every_gpu_of_its_node_and_one_task_per_gpu_is_refused(monkeypatch):
    from tl_research.core import distributed
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "1(x4)")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # SLURM's GPUs for the task: JAX numbers them 0..3
    assert distributed.slurm_local_devices() == [0, 1, 2, 3]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    assert distributed.slurm_local_devices() == list(range(8))
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "0")
    assert distributed.slurm_local_devices() is None  # a CPU job: JAX's default
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "8(x4)")
    with pytest.raises(ConfigError, match=r"srun --ntasks-per-node: 8 is not allowed .*allowed: 1: one task per node"):
        distributed.slurm_local_devices()


# ---------------------------------------------------------------------------------------------- bf16, accumulation

@pytest.mark.long  # two quickstart-sized runs: about 16 s
def test_bfloat16_trains_the_quickstart_model_to_float32_accuracy(data_dir, tmp_path):
    """The quickstart's network and optimizer, from scratch on the 8x8 digits (10 classes, 60 steps, a test
    split of 360): bfloat16 compute ends, over 3 seeds, within 2.5 points of float32's mean test accuracy.
    One seed's gap is noise of about that size either way (-2.5 to +2.2 points measured, with XLA's
    convolution and with the CPU forms alike), so one seed cannot tell a broken bfloat16 from a lucky one."""
    base = config_lib.load_module(str(ROOT / "configs" / "quickstart.py")).get_config()
    over = {"init": "scratch", "data.data_dir": data_dir, "data.name": "sklearn_digits", "data.classes": (),
            "data.batch_size": 32, "train.steps": 60, "train.eval_every": 60, "wandb.mode": "disabled",
            "train.log_every": 60}
    acc = {"float32": [], "bfloat16": []}
    cache = trainer.StepCache()  # the seeds share each precision's compiled steps, as a sweep's runs do
    for seed in (0, 1, 2):
        for precision in acc:
            cfg = config_lib.apply_overrides(base, {**over, "precision": precision, "seed": seed})
            result = trainer.run(cfg, tmp_path / f"{precision}-{seed}", progress=False, cache=cache)
            assert result.status == "done", result.reason
            acc[precision].append(result.metrics["test_accuracy"])
    assert min(acc["float32"]) > 0.9, acc  # it learned enough for the comparison to mean something
    assert abs(np.mean(acc["bfloat16"]) - np.mean(acc["float32"])) <= 0.025, acc


def test_two_micro_batches_give_the_update_of_the_whole_batch(tiny_config):
    """Without batch statistics (strategy.bn=source: BatchNorm in inference mode in every unit) the mean of
    two half-batch gradients is the whole batch's gradient, so one accumulated step makes the plain update."""
    from tl_research.finetune import freezing
    from tl_research import models
    from tl_research.run import setup, steps
    from tl_research.tasks.classification import task as classification
    model = models.build(tiny_config().model, 5, 1, seed=0)
    graphdef, pp, sp, params, stats = steps.split_model(model)
    mesh = setup.mesh()
    labels = freezing.labels(list(params), 0)
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 255, (16, 8, 8, 1), np.uint8), "label": rng.integers(0, 5, 16).astype(np.int32)}
    hp = {"lr": np.float32(0.5), "momentum": np.float32(0.9), "class_weights": np.ones(5, np.float32)}
    new = {}
    for k in (1, 2):
        tx, train = steps.build_train(steps.TrainSpec(
            net=steps.Net(graphdef, pp, sp), frozen_depth=0, labels=labels, optimizer=tiny_config().optimizer,
            objective=classification.Objective(5), value_range=(0.0, 1.0), mean=np.float32([0.5]),
            std=np.float32([0.5]), mesh=mesh, update_stats=False, accumulate=k))
        state = {"params": jax.tree.map(np.array, params), "batch_stats": jax.tree.map(np.array, stats),
                 "opt_state": tx.init(params), "step": np.int32(0), "key": jax.random.key_data(jax.random.key(0))}
        state, m = train(state, steps.to_device(batch, sharding.batch_sharding(mesh)), hp, {})
        state, _ = train(state, steps.to_device(batch, sharding.batch_sharding(mesh)), hp, {})  # momentum too
        new[k] = jax.device_get(state["params"])
    moved = max(float(np.max(np.abs(new[1][n] - params[n]))) for n in params)
    assert moved > 1e-2  # the steps did change the weights
    for n in params:
        np.testing.assert_allclose(new[2][n], new[1][n], rtol=0, atol=1e-5, err_msg=n)
