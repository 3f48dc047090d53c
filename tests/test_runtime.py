"""What a run runs on (tl_research/core/runtime.py): the line, the warning for an accelerator JAX does not use,
train.deterministic, a TPU VM's detection. The launch's first line and each run's record of it:
tests/test_launchers.py::test_a_launch_says_what_it_runs_on_first_and_every_run_records_it."""
import os

import pytest

from tl_research.core import runtime
from tl_research.core.errors import ConfigError


def test_line_names_platform_devices_processes_and_mesh():
    info = {"platform": "gpu", "device_kind": "NVIDIA H100 80GB HBM3", "devices": 16, "processes": 2,
            "jax": "0.10.2", "mesh": {"data": 2, "fsdp": 8}}
    assert runtime.line(info) == "on gpu: 16 x NVIDIA H100 80GB HBM3, 2 processes, mesh data=2 fsdp=8 (jax 0.10.2)"


def test_an_unused_accelerator_gets_one_warning_line_with_the_install_command():
    text = runtime.unused_accelerator_warning("cpu", present="NVIDIA GPU")
    assert text.startswith("warning: this host has a NVIDIA GPU but JAX runs on the CPU")
    assert text.endswith("pip install -r requirements-cuda.txt") and "\n" not in text
    assert runtime.unused_accelerator_warning("cpu", present="TPU").endswith("pip install -r requirements-tpu.txt")
    assert runtime.unused_accelerator_warning("gpu", present="NVIDIA GPU") == ""  # JAX uses it
    assert runtime.unused_accelerator_warning("cpu", present="") == ""  # a CPU host
    assert runtime.accelerator_present() == ""  # this machine: no GPU, no TPU


def test_deterministic_sets_xla_gpu_deterministic_ops_once_and_one_value_per_sweep(tiny_config):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    runtime.deterministic(False, env)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    runtime.deterministic(True, env)
    runtime.deterministic(True, env)
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                        "--xla_gpu_deterministic_ops=true"]
    base = tiny_config()
    assert runtime.sweep_deterministic(base, [{}, {"seed": 1}]) is False
    assert runtime.sweep_deterministic(base, [{"train.deterministic": True}]) is True
    with pytest.raises(ConfigError, match=r"train.deterministic=\[False, True\] .*one value for every run"):
        runtime.sweep_deterministic(base, [{"train.deterministic": True}, {}])


def test_the_deterministic_flag_is_one_the_installed_jaxlib_accepts():
    """An unknown XLA flag is fatal at JAX's start: the flag must exist in this jaxlib (it is a GPU flag, so
    on the CPU it changes nothing)."""
    import subprocess
    import sys
    code = "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"
    env = dict(os.environ, XLA_FLAGS=" ".join(runtime.DETERMINISTIC_XLA_FLAGS), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "3.0", out.stderr[-2000:]


def test_a_tpu_vm_is_detected_from_its_device_files_and_libtpu(monkeypatch):
    """On a Cloud TPU VM the pod is found by JAX from the metadata server, not the environment: the VM is
    recognised by its TPU device files with libtpu installed (what could be tested without a TPU)."""
    import glob
    import importlib.util
    from tl_research.core import distributed
    for var in ("SLURM_NTASKS", "SLURM_PROCID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    assert distributed._cluster() == ""  # this machine
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(glob, "glob", lambda pattern: ["/dev/accel0"] if "accel" in pattern else [])
    assert distributed._cluster() == ""  # TPU device files without JAX's TPU runtime: nothing to join
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "libtpu" else real_find_spec(name, *a))
    assert distributed._cluster() == "tpu"
