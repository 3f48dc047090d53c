"""What a run runs on: the platform, the device kind and count, the processes and the mesh, said in the first
line of a launch and recorded in each run's config.json, result.json, timing.json and W&B config; a warning
when the host has an accelerator that JAX does not use; XLA's deterministic GPU ops on request.

A CPU-only JAX on a GPU host trains on the CPU without a word from JAX once its logging is quiet (JAX's own
"falling back to cpu" is a log line), and an 8-GPU node then trains at CPU speed: `warn_if_unused_accelerator`
names the install command that fixes it (requirements-cuda.txt / requirements-tpu.txt).
"""
from __future__ import annotations

import glob
import os

# XLA's deterministic GPU kernels (scatter, reductions, convolution algorithms picked without autotuning
# races): the same run gives the same bits on the same GPU, at a cost in speed. Set before JAX starts.
DETERMINISTIC_XLA_FLAGS = ("--xla_gpu_deterministic_ops=true",)
INSTALL = {"NVIDIA GPU": "pip install -r requirements-cuda.txt", "TPU": "pip install -r requirements-tpu.txt"}


def describe(mesh=None) -> dict:
    """{platform, device_kind, devices, local_devices, processes, mesh: {axis: size}, jax} of this process."""
    import jax
    devices = jax.devices()
    info = {"platform": devices[0].platform, "device_kind": devices[0].device_kind, "devices": len(devices),
            "local_devices": jax.local_device_count(), "processes": jax.process_count(), "jax": jax.__version__}
    if mesh is not None:
        info["mesh"] = {str(k): int(v) for k, v in mesh.shape.items()}
    return info


def line(info: dict) -> str:
    """`on gpu: 8 x NVIDIA H100 80GB HBM3, 1 process, mesh data=8 (jax 0.10.2)`."""
    procs = info["processes"]
    mesh = info.get("mesh")
    where = f"{info['devices']} x {info['device_kind']}, {procs} process{'es' if procs > 1 else ''}"
    if mesh:
        where += ", mesh " + " ".join(f"{k}={v}" for k, v in mesh.items())
    return f"on {info['platform']}: {where} (jax {info['jax']})"


def accelerator_present() -> str:
    """'NVIDIA GPU' or 'TPU' when this host has one (its device files), else ''. Reads no JAX."""
    if os.path.exists("/dev/nvidia0") or glob.glob("/proc/driver/nvidia/gpus/*"):
        return "NVIDIA GPU"
    if glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"):  # TPU v2-v4, v5e and later
        return "TPU"
    return ""


def unused_accelerator_warning(platform: str, present: str | None = None) -> str:
    """The one warning line for a host whose accelerator JAX does not use ('' when there is nothing to say)."""
    present = accelerator_present() if present is None else present
    if not present or platform != "cpu":
        return ""
    return (f"warning: this host has a {present} but JAX runs on the CPU (a CPU-only jax is installed); "
            f"for the {present}: {INSTALL[present]}")


def warn_if_unused_accelerator(platform: str, echo=print) -> None:
    text = unused_accelerator_warning(platform)
    if text:
        echo(text)


def sweep_deterministic(base, points) -> bool:
    """train.deterministic of a sweep: one value for all its runs (it is set for the process), else ConfigError."""
    from tl_research.core.errors import ConfigError
    values = {bool(p.get("train.deterministic", base.train.deterministic)) for p in points} or {
        bool(base.train.deterministic)}
    if len(values) > 1:
        raise ConfigError("train.deterministic", sorted(values), "one value for every run of a sweep",
                          why="it is set for the whole process before JAX starts")
    return values.pop()


def backend_started() -> bool:
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()


def add_xla_flags(new, environ=None) -> None:
    """Appends the flags `new` to XLA_FLAGS (read when JAX starts its backend), keeping any the environment
    sets already by name."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "").split()
    names = {f.split("=")[0] for f in flags}
    flags += [f for f in new if f.split("=")[0] not in names]
    environ["XLA_FLAGS"] = " ".join(flags)


def deterministic(flag: bool, environ=None) -> None:
    """train.deterministic: XLA's deterministic GPU ops, in XLA_FLAGS before JAX starts its backend (no effect
    on a CPU, whose runs are deterministic already, one core each: sweep_job.pin_cpu_run)."""
    if flag:
        add_xla_flags(DETERMINISTIC_XLA_FLAGS, environ)
