"""Training throughput of this codebase on one GPU (or on the CPU with --smoke) against PyTorch on the same
device: images/s per section, compile times, MFU, and the ratios the goals are stated in.

Sections (--sections, a comma list; default all, run in this order):

    resnet        ResNet-50 (model.name=resnet50) at 224 px, bfloat16 compute on float32 parameters
                  (precision=bfloat16), full fine-tuning, SGD: images/s with the batch already on the device
                  (the compute ceiling)
    pipeline      the same step fed by the codebase's input pipeline (data/pipeline.py train batches, in the
                  pattern of loop.Training.loop: to_device every step, a block every train.log_every) from
                  a JPEG folder (data.name="folder:PATH"; data.cache_mb=0, so JPEGs are decoded every step as
                  for any dataset above data.cache_mb): end-to-end images/s and end-to-end / on-device
    frozen        ResNet-50 at frozen depth = half its depth units (8 of 17), from the images
                  (train.feature_cache off)
    cached        the same depth on the frozen-prefix feature-cache path (tl_research/run/feature_cache.py: the
                  step starts at the cached depth): images/s on the device, and fed from the cached split
    vit           ViT-B/16 (vit_b16) at 224 px, full fine-tuning: images/s and MFU
    torch_resnet  torchvision's ResNet-50, AMP bf16 (torch.autocast), channels_last, SGD, on the same device
    torch_vit     timm's vit_base_patch16_224, AMP bf16, SGD

The JAX sections train through the codebase's own code path, not a hand-written step: loop.Training sets
each run up (data, model, the phase's jitted step from steps.Program.steps through the StepCache, the fresh
state, the feature-cache decision) and its own batch iterator (Training._train_batches) feeds it; this script
lowers and compiles that jitted step once (the compile time is reported apart, and XLA's cost_analysis of the
compiled step gives its FLOPs), then times it: --warmup steps untimed, then --steps steps closed by
jax.block_until_ready. MFU = FLOPs per step / step time / the device's dense bf16 peak (H100 SXM and H200
989.4e12, H100 PCIe 756e12, A100 312e12 FLOP/s; n/a on a CPU or an unknown device unless --peak_tflops).
The JPEGs are 500x375 crops of scikit-image's sample photographs (smooth synthetic pictures where
scikit-image is missing), one class per photograph, prepared by the folder builder (data/folder.py). The
PyTorch sections run in a child process (each framework has the device to itself and no CUDA library is
loaded twice; JAX's preallocation is off by default so that the child has room) on a synthetic batch already
on the device, with as many classes as the folder; a section whose library (torch, torchvision, timm) is
missing is skipped with the reason printed. On a machine without grain, tensorflow_datasets or
ml_collections (wheels not carried) the JAX sections fail one by one with the missing module named.

Goals: ResNet-50 JAX / PyTorch images/s >= 1.0; ViT-B/16 MFU >= 40%; end-to-end / on-device >= 0.9.

    python benchmarks/gpu_throughput.py [--batch 256] [--steps 20] [--warmup 5] [--sections resnet,vit,...]
        [--threads 2 --prefetch 4] [--json figures.json] [--budget_s 300]      # on a GPU host (GPU 0 only
                                                                                # unless --all_gpus)
    python benchmarks/gpu_throughput.py --smoke     # on a CPU: resnet_cifar and ViT-Ti/16 at 32 px, batch 4

The first line printed names the platform, the device kind, the device count and the jax version; then one
line per section, the table, the ratios against their goals. --smoke proves the code paths, not speed
(tests/test_gpu_throughput_smoke.py runs its JAX sections). The GPU figures are recorded in
benchmarks/README.md by whoever runs this on a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import io
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JAX_SECTIONS = ("resnet", "pipeline", "frozen", "cached", "vit")
TORCH_SECTIONS = ("torch_resnet", "torch_vit")
SECTIONS = JAX_SECTIONS + TORCH_SECTIONS
# rough seconds a section takes at the full sizes (compile included): one is started only if the budget has them
NEED_S = {"resnet": 60, "pipeline": 20, "frozen": 45, "cached": 45, "vit": 60, "torch_resnet": 40, "torch_vit": 40}
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989.4e12), ("H200", 989.4e12), ("A100", 312e12))
TIMM_NAMES = {"vit_b16": "vit_base_patch16_224", "vit_s16": "vit_small_patch16_224",
              "vit_ti16": "vit_tiny_patch16_224"}
GOALS = {"resnet_jax_over_torch": 1.0, "vit_mfu": 0.40, "end_to_end_over_on_device": 0.9}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
FULL = dict(resnet="resnet50", vit="vit_b16", size=224, batch=256, steps=20, warmup=5, jpegs=512)
SMOKE = dict(resnet="resnet_cifar", vit="vit_ti16", size=32, batch=4, steps=2, warmup=1, jpegs=16)


class Skipped(Exception):
    """A section that cannot run here; the message is the reason printed."""


# ---------------------------------------------------------------------------------------------- arguments

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes for a CPU (code paths, not speed)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--batch", type=int, help="global batch size (full 256, smoke 4)")
    ap.add_argument("--steps", type=int, help="timed steps per figure (full 20, smoke 2)")
    ap.add_argument("--warmup", type=int, help="untimed steps after compiling (full 5, smoke 1)")
    ap.add_argument("--size", type=int, help="image side in pixels (full 224, smoke 32)")
    ap.add_argument("--jpegs", type=int, help="JPEGs in the folder dataset (full 512, smoke 16)")
    ap.add_argument("--resnet", help="the ResNet registry name (full resnet50, smoke resnet_cifar); torchvision's "
                                     "model of that name on the PyTorch side (resnet_cifar: torch_sweep.py's)")
    ap.add_argument("--vit", help="the ViT registry name (full vit_b16, smoke vit_ti16); timm's on the other side")
    ap.add_argument("--threads", type=int, default=2, help="data.threads of the pipeline (its default: 2)")
    ap.add_argument("--prefetch", type=int, default=4, help="data.prefetch of the pipeline (its default: 4)")
    ap.add_argument("--workdir", help="folder for the JPEGs, the prepared dataset and the runs (default: a "
                                      "temporary one, deleted at the end)")
    ap.add_argument("--json", help="write every figure to this JSON file")
    ap.add_argument("--budget_s", type=float, default=0.0,
                    help="wall-clock budget; sections that no longer fit are skipped with a printed line (0: none)")
    ap.add_argument("--peak_tflops", type=float, default=0.0, help="the device's dense bf16 peak, for MFU on a "
                                                                    "device the table lacks")
    ap.add_argument("--torch_compile", action="store_true", help="torch.compile the PyTorch models (optional)")
    ap.add_argument("--jax_cache", help="JAX's persistent compilation cache folder (default: none, cold compiles)")
    ap.add_argument("--all_gpus", action="store_true", help="leave CUDA_VISIBLE_DEVICES alone (default: GPU 0)")
    ap.add_argument("--torch_worker", help=argparse.SUPPRESS)  # internal: one PyTorch section, in a child
    args = ap.parse_args(argv)
    for key, value in (SMOKE if args.smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return args


# ---------------------------------------------------------------------------------------------- the photos

@functools.lru_cache(maxsize=1)
def _photos() -> list:
    """(name, RGB uint8 array) of the source pictures: scikit-image's bundled photographs, else smooth ones."""
    import numpy as np
    try:
        from skimage import data as sd
        return [(name, getattr(sd, name)()) for name in PHOTOS]
    except Exception:  # noqa: BLE001 - no scikit-image (a GPU image): synthetic pictures instead
        yy, xx = np.mgrid[0:480, 0:640]
        return [(f"pattern{k}", np.stack([(xx * k) % 256, (yy * k) % 256, ((xx + yy) * k) % 256], -1).astype(np.uint8))
                for k in (1, 2, 3, 5)]


def _one_jpeg(job) -> int:
    """One ImageNet-like JPEG: a random crop of photo i % 4 resized to 500x375, mild noise, quality 90."""
    import numpy as np
    from PIL import Image
    root, i = job
    rng = np.random.default_rng(i)
    name, src = _photos()[i % len(PHOTOS)]
    h, w = src.shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    im = Image.fromarray(src[y:y + ch, x:x + cw]).resize((500, 375), Image.BICUBIC)
    a = np.asarray(im).astype(np.int16) + rng.integers(-6, 7, (375, 500, 3))
    path = pathlib.Path(root) / name / f"{i:05d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path.stat().st_size


def make_jpegs(root: pathlib.Path, n: int) -> dict:
    """`n` JPEGs in one subfolder per photo (a class each), made in parallel where there are many."""
    t = time.perf_counter()
    jobs = [(str(root), i) for i in range(n)]
    if n >= 128 and (os.cpu_count() or 1) > 2:
        import multiprocessing
        with multiprocessing.get_context("spawn").Pool(min(16, os.cpu_count())) as pool:
            sizes = pool.map(_one_jpeg, jobs)
    else:
        sizes = [_one_jpeg(j) for j in jobs]
    return {"jpegs": n, "jpeg_kb_mean": round(sum(sizes) / len(sizes) / 1024, 1),
            "make_s": round(time.perf_counter() - t, 2)}


# ---------------------------------------------------------------------------------------------- JAX runs

def cost_flops(obj) -> float:
    """XLA's FLOP count of a lowered or compiled computation (0 where the backend reports none)."""
    try:
        cost = obj.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))
    except Exception:  # noqa: BLE001
        return 0.0


def peak_flops(kind: str, override_tflops: float = 0.0) -> float:
    """The device's dense bf16 peak FLOP/s by its device_kind; 0 when unknown (a CPU)."""
    if override_tflops:
        return override_tflops * 1e12
    for name, peak in PEAK_BF16:
        if name in kind and not (name == "H100" and ("NVL" in kind or "PCIe" in kind)):
            return peak
    return 0.0


def run_config(args, data: dict, model: str, *, frozen_depth: int = 0, feature_cache: bool = False):
    """The config of one benchmarked run: the JPEG folder, bfloat16 compute, SGD (the defaults), scratch init."""
    from tl_research import config as C
    c = C.base_config()
    c.name = "gpu_throughput"
    c.data.name, c.data.data_dir = f"folder:{data['root']}", str(data["tfds"])
    c.data.image_size = args.size
    c.data.batch_size = c.data.eval_batch_size = args.batch
    c.data.cache_mb = 0  # decode the JPEGs every step, as a dataset above data.cache_mb is read
    c.data.threads, c.data.prefetch = args.threads, args.prefetch
    c.model.name = model
    if model.startswith("vit_"):
        c.model.image_size = args.size  # the position embedding's grid
    c.precision = "bfloat16"
    c.frozen_depth = frozen_depth
    c.train.feature_cache = feature_cache
    c.train.steps = 4 * (args.warmup + args.steps) + args.prefetch + 16  # batches the pipeline will yield
    c.wandb.mode = "disabled"
    return c


def half_depth(model: str) -> int:
    from tl_research import config as C, models
    c = C.base_config()
    c.model.name = model
    return models.abstract(c.model, len(PHOTOS), 3).num_units // 2


class JaxRun:
    """One benchmarked run: loop.Training's setup of `config` (data, model, the phase's step from the
    StepCache, the fresh state, the feature-cache path), its own train-batch iterator, and its jitted step
    lowered and compiled once for the first batch. Steps are driven as Training.loop drives them."""

    def __init__(self, config, run_dir: pathlib.Path):
        import jax
        from tl_research.run import loop, steps
        self.jax, self.steps_lib = jax, steps
        t = time.perf_counter()
        self.t = tr = loop.Training(config, run_dir, None, steps.StepCache())
        tr.restore()  # no checkpoint in a fresh folder: the fresh state and the phase's step
        self.phase = tr.plan.phases[tr.phase_i]
        self.path, self.why = tr.feats.path(self.phase), tr.feats.why(self.phase)
        self.setup_s = time.perf_counter() - t
        t = time.perf_counter()
        self.batches = tr._train_batches(0)  # on the cached path this computes the train split's activations
        self.host = next(self.batches)
        self.batch_s = time.perf_counter() - t
        self.dev = steps.to_device(self.host, tr.data_sharding)
        self.hp = {"lr": tr.plan.lrs[0], "momentum": tr.plan.momenta[0], "class_weights": tr.s.class_weights}
        self.state, self.anchor = tr.state, tr.prog.anchor
        t = time.perf_counter()
        lowered = tr.steps.train.lower(self.state, self.dev, self.hp, self.anchor)
        self.flops_hlo = cost_flops(lowered)
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t
        self.flops = cost_flops(self.compiled) or self.flops_hlo
        self.batch_size = config.data.batch_size
        self.units = tr.s.model.num_units

    def steps(self, n: int, next_batch, block_every: int = 0) -> float:
        """Seconds for `n` steps on the batches `next_batch()` gives, ended by block_until_ready."""
        t = time.perf_counter()
        m = None
        for i in range(n):
            self.state, m = self.compiled(self.state, next_batch(), self.hp, self.anchor)
            if block_every and (i + 1) % block_every == 0:
                self.jax.block_until_ready(m)
        self.jax.block_until_ready((self.state, m))
        return time.perf_counter() - t

    def on_device(self, steps: int, warmup: int) -> float:
        """Images/s with the batch already on the device."""
        self.steps(warmup, lambda: self.dev)
        return self.batch_size * steps / self.steps(steps, lambda: self.dev)

    def fed(self, steps: int, warmup: int, drain: int) -> float:
        """Images/s fed by the run's pipeline as Training.loop feeds it (to_device each step, a block every
        train.log_every). After the warm-up, `drain` batches are taken untimed: what the pipeline prepared
        ahead while the step compiled would otherwise overstate its steady rate."""
        tr = self.t
        put = lambda: self.steps_lib.to_device(next(self.batches), tr.data_sharding)  # noqa: E731
        every = int(tr.config.train.log_every)
        self.steps(warmup, put, every)
        for _ in range(drain):
            next(self.batches)
        return self.batch_size * steps / self.steps(steps, put, every)

    def figures(self, images_per_s: float, peak: float) -> dict:
        step_s = self.batch_size / images_per_s
        mem = {}
        try:
            mem = self.jax.devices()[0].memory_stats() or {}
        except Exception:  # noqa: BLE001
            pass
        return {"model": self.t.config.model.name, "batch": self.batch_size, "size": int(self.t.s.data.image_shape[0]),
                "units": self.units, "frozen_depth": int(self.phase.frozen_depth), "path": self.path,
                "setup_s": round(self.setup_s, 2), "compile_s": round(self.compile_s, 2),
                "gflop_per_step": round(self.flops / 1e9, 2), "gflop_per_step_hlo": round(self.flops_hlo / 1e9, 2),
                "step_ms": round(step_s * 1e3, 2), "images_per_s": round(images_per_s, 1),
                "mfu": round(self.flops / step_s / peak, 4) if peak and self.flops else None,
                "process_peak_memory_gb": round(mem.get("peak_bytes_in_use", 0) / 1e9, 2) or None}

    def close(self) -> None:
        self.t.manager.close()
        self.compiled = self.state = self.dev = self.batches = self.t = None


# ---------------------------------------------------------------------------------------------- sections

class Bench:
    """The sections in order under one budget, their figures and the final report."""

    def __init__(self, args, env: dict):
        self.args, self.env, self.t0 = args, env, time.time()
        self.peak = peak_flops(env.get("device_kind", ""), args.peak_tflops)  # 0 on a CPU: MFU n/a
        self.workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="gpu_throughput-")).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.results = {"env": env, "args": {k: v for k, v in vars(args).items() if k != "torch_worker"},
                        "peak_flops": self.peak or None, "sections": {}, "data": None}
        self._data, self._full = None, None

    def left(self) -> float:
        return self.args.budget_s - (time.time() - self.t0) if self.args.budget_s else float("inf")

    def run(self, name: str) -> None:
        """One section under the budget: its figures, or why it was skipped or failed, in results."""
        need = 0 if self.args.smoke else NEED_S[name]
        if self.left() < max(need, 1e-9):
            reason = (f"the budget: {max(self.left(), 0):.0f} s of {self.args.budget_s:.0f} s left, it needs ~{need} s"
                      if need else f"the budget of {self.args.budget_s:.0f} s is spent")
            print(f"SKIP {name}: {reason}", flush=True)
            out = {"skipped": reason}
        else:
            print(f"== {name}", flush=True)
            t = time.time()
            out = self._measure(name)
            out["wall_s"] = round(time.time() - t, 1)
            print(f"   {json.dumps(out, default=str)}", flush=True)
        self.results["sections"][name] = out
        if name == "pipeline" or (name == "resnet" and "pipeline" not in self.args.sections):
            self.release_full()  # the full fine-tuning run's device memory, before the next model

    def _measure(self, name: str) -> dict:
        try:
            return globals()[f"section_{name}"](self)
        except Skipped as e:
            print(f"SKIP {name}: {e}", flush=True)
            return {"skipped": str(e)}
        except ImportError as e:  # a package this machine lacks (grain, tensorflow_datasets, ml_collections...)
            out = {"error": f"a module is missing here: {e.name or '?'} ({type(e).__name__}: {e})"}
            print(f"FAILED {name}: {out['error']}", flush=True)
            return out
        except Exception as e:  # noqa: BLE001 - one failed section must not end the others
            out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
            print(f"FAILED {name}: {out['error']}\n{traceback.format_exc(limit=6)}", flush=True)
            return out

    def data(self) -> dict:
        """The JPEG folder and its prepared TFDS dataset (made once; a failure fails every JAX section)."""
        if self._data is None:
            try:
                self._data = self._prepare()
            except Exception as e:  # noqa: BLE001
                self._data = e
        if isinstance(self._data, Exception):
            raise Skipped(f"no folder dataset: {type(self._data).__name__}: {self._data}")
        return self._data

    def _prepare(self) -> dict:
        root, tfds_dir = self.workdir / "photos", self.workdir / "tfds"
        info = make_jpegs(root, self.args.jpegs) if not root.exists() else {"jpegs": self.args.jpegs}
        import tensorflow_datasets as tfds
        from tl_research.data import folder
        tfds.disable_progress_bar()
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # TFDS's "Downloading and preparing" lines
            folder.builder(str(root), str(tfds_dir))  # decodes every image once, writes array_record files
        info.update(prepare_s=round(time.perf_counter() - t, 2))
        self.results["data"] = info
        print(f"   folder dataset: {json.dumps(info)}", flush=True)
        return {"root": root, "tfds": tfds_dir}

    def jax_run(self, tag: str, model: str, **kw) -> JaxRun:
        return JaxRun(run_config(self.args, self.data(), model, **kw), self.workdir / "runs" / tag)

    def full(self) -> tuple[JaxRun, dict]:
        """The full fine-tuning ResNet run and its on-device figures (shared by resnet and pipeline)."""
        if self._full is None:
            run = self.jax_run("resnet", self.args.resnet)
            self._full = (run, run.figures(run.on_device(self.args.steps, self.args.warmup), self.peak))
        return self._full

    def release_full(self) -> None:
        if self._full is not None:
            self._full[0].close()
            self._full = None
            gc.collect()


def section_resnet(b: Bench) -> dict:
    return dict(b.full()[1])


def section_pipeline(b: Bench) -> dict:
    run, device = b.full()
    rate = run.fed(b.args.steps, b.args.warmup, drain=b.args.prefetch)
    return {"model": device["model"], "batch": device["batch"], "size": device["size"],
            "threads": b.args.threads, "prefetch": b.args.prefetch, "images_per_s": round(rate, 1),
            "step_ms": round(1e3 * run.batch_size / rate, 2), "on_device_images_per_s": device["images_per_s"],
            "end_to_end_over_on_device": round(rate / device["images_per_s"], 3)}


def section_frozen(b: Bench) -> dict:
    run = b.jax_run("frozen", b.args.resnet, frozen_depth=half_depth(b.args.resnet), feature_cache=False)
    try:
        return run.figures(run.on_device(b.args.steps, b.args.warmup), b.peak)
    finally:
        run.close()


def section_cached(b: Bench) -> dict:
    run = b.jax_run("cached", b.args.resnet, frozen_depth=half_depth(b.args.resnet), feature_cache=True)
    try:
        if not run.path.startswith("cached"):
            raise RuntimeError(f"the trainer did not take the cached path ({run.path}): {run.why}")
        out = run.figures(run.on_device(b.args.steps, b.args.warmup), b.peak)
        acts = run.host["image"]
        out.update(activation_shape=list(acts.shape[1:]), activation_dtype=str(acts.dtype),
                   activation_batch_mb=round(acts.nbytes / 2**20, 2), cache_fill_s=round(run.batch_s, 2),
                   fed_images_per_s=round(run.fed(b.args.steps, b.args.warmup, drain=b.args.prefetch), 1))
        return out
    finally:
        run.close()


def section_vit(b: Bench) -> dict:
    run = b.jax_run("vit", b.args.vit)
    try:
        return run.figures(run.on_device(b.args.steps, b.args.warmup), b.peak)
    finally:
        run.close()


def section_torch_resnet(b: Bench) -> dict:
    return torch_child(b, "torch_resnet")


def section_torch_vit(b: Bench) -> dict:
    return torch_child(b, "torch_vit")


def torch_child(b: Bench, name: str) -> dict:
    """One PyTorch section in a child process (the device to itself, no library clash with JAX's)."""
    out = b.workdir / f"{name}.json"
    a = b.args
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--torch_worker", name, "--json", str(out),
           "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", str(a.warmup), "--size", str(a.size),
           "--resnet", a.resnet, "--vit", a.vit] + (["--torch_compile"] if a.torch_compile else [])
    timeout = None if b.left() == float("inf") else max(30.0, b.left())
    try:
        # OpenMP's spinning threads slow a CPU torch several times over on a busy machine (torch_sweep.py)
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Skipped(f"the budget: the PyTorch child ran past {timeout:.0f} s") from None
    if not out.exists():
        raise RuntimeError(f"the PyTorch child exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    res = json.loads(out.read_text())
    if "skipped" in res:
        raise Skipped(res["skipped"])
    return res


# ---------------------------------------------------------------------------------------------- PyTorch

def import_torchvision():
    """torchvision, also on a CPU torch wheel whose torchvision build's C++ extension does not load (its
    import then fails registering torchvision::nms): the two detection operator schemas are declared and the
    import retried, as tests/real_torchvision.py does. The classification models never call them."""
    import torch
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]
    lib = torch.library.Library("torchvision", "DEF")
    for schema in ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                   "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"):
        lib.define(schema)
    import_torchvision.lib = lib  # the declarations live as long as the Library object
    import torchvision
    return torchvision


def torch_model(args, name: str, classes: int):
    """(model, mean, std, channels_last, label) of a PyTorch section; Skipped when its library is missing."""
    try:
        tv = import_torchvision()
    except ImportError as e:
        raise Skipped(f"torchvision is not importable ({e})") from None
    if name == "torch_resnet" and args.resnet == "resnet_cifar":  # the smoke model: its PyTorch twin
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import torch_sweep
        return torch_sweep.resnet_cifar((1, 1, 1), 16, 3, classes, seed=0), (0.485, 0.456, 0.406), \
            (0.229, 0.224, 0.225), True, "torch_sweep resnet_cifar"
    if name == "torch_resnet":
        make = getattr(tv.models, args.resnet, None)
        if make is None:
            raise Skipped(f"torchvision has no model {args.resnet!r}")
        return make(num_classes=classes), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, \
            f"torchvision {args.resnet}"
    if args.vit not in TIMM_NAMES:
        raise Skipped(f"no timm counterpart known for {args.vit!r} ({', '.join(TIMM_NAMES)})")
    try:
        import timm
    except ImportError as e:
        raise Skipped(f"timm is not importable ({e})") from None
    model = timm.create_model(TIMM_NAMES[args.vit], pretrained=False, num_classes=classes, img_size=args.size)
    return model, (0.5,) * 3, (0.5,) * 3, False, f"timm {TIMM_NAMES[args.vit]}"


def torch_section(args) -> dict:
    """images/s of one SGD training step of the section's model, AMP bf16, on the batch already on the device."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        raise Skipped(f"torch is not importable ({e})") from None
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    model, mean, std, channels_last, label = torch_model(args, args.torch_worker, len(PHOTOS))
    model = model.to(dev).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    fwd = torch.compile(model) if args.torch_compile else model
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, generator=g).to(dev)
    y = torch.randint(0, len(PHOTOS), (args.batch,), generator=g).to(dev)
    m, s = (torch.tensor(v, device=dev).view(1, 3, 1, 1) for v in (mean, std))
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step():
        xf = ((x.float() / 255.0 - m) / s).contiguous(memory_format=fmt)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(fwd(xf), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t
    for _ in range(max(args.warmup - 1, 0)):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = (time.perf_counter() - t) / args.steps
    return {"model": label, "batch": args.batch, "size": args.size, "device": torch.cuda.get_device_name(dev)
            if dev.type == "cuda" else "cpu", "torch": torch.__version__, "amp": "bfloat16",
            "channels_last": channels_last, "torch_compile": bool(args.torch_compile),
            "first_step_s": round(first, 2), "step_ms": round(dt * 1e3, 2), "images_per_s": round(args.batch / dt, 1)}


def torch_worker(args) -> None:
    try:
        res = torch_section(args)
    except Skipped as e:
        res = {"skipped": str(e)}
    pathlib.Path(args.json).write_text(json.dumps(res))


# ---------------------------------------------------------------------------------------------- report

def environment(args) -> dict:
    """Imports JAX (after the environment it reads is set) and prints the first line: where this runs."""
    if not args.all_gpus:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # room for the PyTorch child on the GPU
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)  # TFDS names every file of the folder config per load
    try:
        import jax
        if args.jax_cache:
            jax.config.update("jax_compilation_cache_dir", args.jax_cache)
        devices = jax.devices()
        env = {"platform": jax.default_backend(), "device_kind": devices[0].device_kind,
               "devices": len(devices), "jax": jax.__version__}
    except Exception as e:  # noqa: BLE001 - the PyTorch sections can still run
        env = {"platform": "unknown", "device_kind": "unknown", "devices": 0, "jax": f"not importable ({e})"}
    print(f"gpu_throughput: platform={env['platform']} device_kind={env['device_kind']!r} "
          f"devices={env['devices']} jax={env['jax']}", flush=True)
    env.update(python=sys.version.split()[0], cpu_count=os.cpu_count(), smoke=bool(args.smoke))
    return env


def _fig(sections: dict, name: str, key: str = "images_per_s"):
    value = sections.get(name, {}).get(key)
    return value if isinstance(value, (int, float)) else None


def ratios(res: dict) -> dict:
    s = res["sections"]
    jr, tr = _fig(s, "resnet") or _fig(s, "pipeline", "on_device_images_per_s"), _fig(s, "torch_resnet")
    jv, tv = _fig(s, "vit"), _fig(s, "torch_vit")
    return {"resnet_jax_over_torch": round(jr / tr, 3) if jr and tr else None,
            "vit_mfu": _fig(s, "vit", "mfu"),
            "end_to_end_over_on_device": _fig(s, "pipeline", "end_to_end_over_on_device"),
            "vit_jax_over_torch": round(jv / tv, 3) if jv and tv else None}


def _note(name: str, r: dict) -> str:
    if "skipped" in r or "error" in r:
        return (("skipped: " + r["skipped"]) if "skipped" in r else ("FAILED: " + r["error"]))[:160]
    if name == "pipeline":
        return f"threads={r['threads']} prefetch={r['prefetch']}, on device {r['on_device_images_per_s']:,.1f}"
    if name == "cached":
        return (f"{r['path']}, fed {r['fed_images_per_s']:,.1f}/s, {r['activation_batch_mb']} MB/batch "
                f"{r['activation_dtype']}, cache fill {r['cache_fill_s']} s")
    if name.startswith("torch_"):
        return f"{r['device']}, torch {r['torch']}, AMP bf16" + (", channels_last" if r["channels_last"] else "") \
            + (", torch.compile" if r["torch_compile"] else "") + f", first step {r['first_step_s']} s"
    return f"{r['path']}, frozen {r['frozen_depth']}/{r['units']}, {r['gflop_per_step']} GFLOP/step"


def print_report(res: dict) -> None:
    print(f"\n{'section':<13} {'model':<30} {'batch':>5} {'px':>4} {'compile s':>9} {'step ms':>9} "
          f"{'images/s':>10} {'MFU':>6}  notes")
    for name, r in res["sections"].items():
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
        rate = f"{r['images_per_s']:,.1f}" if "images_per_s" in r else "-"
        comp = r.get("compile_s", r.get("first_step_s", "-"))
        print(f"{name:<13} {str(r.get('model', '-')):<30} {str(r.get('batch', '-')):>5} {str(r.get('size', '-')):>4} "
              f"{str(comp):>9} {str(r.get('step_ms', '-')):>9} {rate:>10} {mfu:>6}  {_note(name, r)}")
    q, names = res["ratios"], res["args"]

    def show(key, pct=False):
        v = q.get(key)
        return "n/a" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.3f}")
    print(f"\n{names['resnet']} JAX / PyTorch images/s: {show('resnet_jax_over_torch')} "
          f"(goal >= {GOALS['resnet_jax_over_torch']})")
    print(f"{names['vit']} MFU: {show('vit_mfu', pct=True)} (goal >= {100 * GOALS['vit_mfu']:.0f}%)"
          + ("" if res.get("peak_flops") else "  [no bf16 peak known for this device]"))
    print(f"end-to-end / on-device: {show('end_to_end_over_on_device')} "
          f"(goal >= {GOALS['end_to_end_over_on_device']})")
    print(f"{names['vit']} JAX / PyTorch images/s: {show('vit_jax_over_torch')} (no goal)")


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.torch_worker:
        return torch_worker(args)
    env = environment(args)
    bench = Bench(args, env)
    try:
        for name in [s for s in SECTIONS if s in args.sections]:
            bench.run(name)
        bench.release_full()
    finally:
        if not args.workdir:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    res = bench.results
    res["ratios"], res["goals"], res["wall_s"] = ratios(res), GOALS, round(time.time() - bench.t0, 1)
    print_report(res)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        print(f"figures written to {args.json}")
    return res


if __name__ == "__main__":
    main()
