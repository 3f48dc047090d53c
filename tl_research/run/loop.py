"""The loop of one run (`Training`), in the stages trainer.run calls in order:

    setup      data -> model -> initial weights -> labels/optimizer -> schedule -> mesh -> compiled steps
               -> evaluators (val, test, config.evals)
    restore    fresh state, or the run's last orbax checkpoint (arrays + the typed HostState record)
    loop       sharded jitted train step; logging; evaluation and selection (best step, early stopping;
               the best weights kept in memory); phase switches; checkpoints (asynchronous orbax saves, the
               best weights to best/ with them)
    finish     test metrics at the selected step, exported weights, config.evals there, the result's metrics

Selection is per phase: each phase switch starts it again, so a phased strategy (two_phase, gradual_unfreezing)
reports, tests and exports the best validation step of its final phase; the best step of any phase is
recorded beside it (best_any_phase_* in the result; HostState.best_any_phase).

With a weight EMA (train.ema_decay > 0) each eval also measures the EMA weights (ema_val_*, ema_test_* next to
the raw weights' val_*, test_*), and train.ema_select says which of the two the run selects, tests and exports
(`_weights`); the result records both kinds' metrics at the last step (raw_val_*, ema_test_*, ...).

There is one loop for every strategy: strategies change the labels, the optimizer or the phases, never this
file's structure. A run is a function of its config and seed: batch k, the dropout key of step k and the LR
of step k are pure functions of k, so a resumed run ends where the uninterrupted one would have.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import math
import pathlib
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp

from tl_research import tasks as tasks_lib
from tl_research.checkpoints import weights as weights_lib
from tl_research.core import distributed, durable, runtime as runtime_lib, sharding, timing
from tl_research.core.tracking import RunTracker
from tl_research.data import pipeline
from tl_research.evals import evaluators
from tl_research.finetune import freezing, recipes, strategies
from tl_research.run import feature_cache
from tl_research.run.setup import mesh, setup
from tl_research.run.state import HostState
from tl_research.run.steps import Program, StepCache, to_device

# A cross-entropy this large (logits off by thousands; log(C) at chance) has exploded even while finite
# (e.g. 1e30 at LR 1e30): reported as diverged, like NaN.
DIVERGED_LOSS = 1e4
# training batches put on the devices ahead of the step (DevicePrefetch): the one the step takes and the next
DEVICE_PREFETCH = 2
log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """The run cannot go on (e.g. the loss became NaN); the message is the one-line reason."""


def carry_over(old, new):
    """The optimizer state for a new phase: groups that trained before keep their state (momentum, Adam
    moments and step count); groups just unfrozen start from the fresh state in `new`."""
    if isinstance(new, optax.MultiTransformState):
        return new._replace(inner_states={
            g: (old.inner_states[g] if g in old.inner_states and g != freezing.FROZEN else s)
            for g, s in new.inner_states.items()})
    if isinstance(new, tuple) and hasattr(new, "_fields"):
        return type(new)(*(carry_over(o, n) for o, n in zip(old, new)))
    if isinstance(new, (tuple, list)):
        return type(new)(carry_over(o, n) for o, n in zip(old, new))
    if isinstance(new, dict):
        return {k: carry_over(old[k], v) for k, v in new.items()}
    return old


class Training:
    """One run in progress, in the stages trainer.run calls in order: setup (here), restore, loop (each step:
    train, log, evaluate and select, switch phase, checkpoint) and finish."""

    def __init__(self, config, run_dir: pathlib.Path, init_path: str | None, cache: StepCache,
                 timer: timing.RunTimer | None = None):
        self.config, self.run_dir, self.init_path = config, run_dir, init_path
        self.timer = timer or timing.RunTimer()
        self.s = s = setup(config, init_path, self.timer)
        self.plan = s.plan
        self.mesh = mesh(config)
        self.timer.runtime = self.runtime = runtime_lib.describe(self.mesh)
        self.repl, self.data_sharding = sharding.replicated(self.mesh), sharding.batch_sharding(self.mesh)
        self.prog = Program(s, config, self.mesh, cache)
        self.task = s.task
        self.metric = s.task.metric  # accuracy | miou | map: the val_/test_ metric selection and tables use
        self.metric_name = tasks_lib.selection_metric(config)  # val_<metric> or val_loss
        self.eval_every = config.train.eval_every or s.steps_per_epoch
        self.ckpt_every = config.train.checkpoint_every  # 0: at evals, train.checkpoint_seconds apart
        self.last_save = None  # time.monotonic() of this process's last state checkpoint
        self.patience = config.train.early_stopping_patience
        self.track_best = config.train.restore_best or self.patience > 0
        self.eval_test = bool(config.train.eval_test)
        put = functools.partial(to_device, sharding=self.data_sharding)
        # any eval batch size on any device count: rounded up to split evenly, the extra rows masked
        eval_bs = sharding.padded(config.data.eval_batch_size, self.data_sharding.num_devices)
        # val and test in batches no larger than the larger split: a small split is not padded to a batch
        # many times its size at every evaluation
        split_bs = sharding.padded(min(config.data.eval_batch_size, max(len(s.data.val), len(s.data.test), 1)),
                                   self.data_sharding.num_devices)
        common = dict(put=put, batch_size=split_bs, threads=config.data.threads)
        # the frozen prefix's activations, cached where that is exact (tl_research.run.feature_cache); computing
        # them counts as data preparation in timing.json
        with self.timer.phase("data"):
            self.feats = feature_cache.for_program(self.prog, config, put=put, batch_size=eval_bs,
                                                   directory=run_dir.parent / feature_cache.FOLDER)
            d = self.feats.eval_depth
            evaluate = self.prog.evaluate_from(d)
            self.val, self.test = (
                s.task.evaluator(evaluate, s.data, self.feats.split(r, d) if d else getattr(s.data, r), **common)
                for r in ("val", "test"))
        self.extras = evaluators.build(config.get("evals", {}), data=s.data, data_cfg=config.data,
                                       eval_step=self.prog.evaluate, features=self.prog.features, put=put,
                                       batch_size=eval_bs)
        # asynchronous: a save copies the state to host memory and returns; the files are written while the
        # next steps train. The loop waits for the last save before the run's result is written.
        self.manager = ocp.CheckpointManager(run_dir / "checkpoints", options=ocp.CheckpointManagerOptions(
            max_to_keep=1, enable_async_checkpointing=True), item_names=("state", "host"))
        self.best_dir = run_dir / "best"
        self.best_written = True  # whether best/ holds self.best (written at checkpoints and at the end)
        self.trainable_params = self.prog.trainable_count(self.plan.phases[-1])
        self.val_now = self.test_now = None  # the evals of the step just run, if it evaluated
        # with a weight EMA: the kinds of weights evaluated ("raw", "ema") and the one the run selects
        self.kinds = ("raw", "ema") if self.prog.ema is not None else ("raw",)
        self.selected = "ema" if recipes.selects_ema(config) else "raw"
        self.kinds_now: dict = {}  # the step just run's evals of each kind: {("val" | "test", kind): Score}

    def restore(self) -> None:
        """The state to start from: fresh, or the last readable checkpoint's (an unreadable one, e.g. cut
        short by a disk that lost data, is deleted and the one before it, or a fresh start, used instead, with
        a warning). The state saved after step t has the optimizer structure of the phase of step index t
        (phase switches happen before the checkpoint of a phase's last step)."""
        self.host, self.best = HostState(), None
        for step in sorted(self.manager.all_steps(), reverse=True):
            if self._restore_step(int(step)):
                break
        else:
            self._fresh(0)
        phases = self.plan.phases  # a checkpoint from before per-phase selection: its best sorted by phase
        self.host.adopt(phases[self.phase_i].start, lambda step: phases[self.plan.phase_index(step - 1)].name)
        if self.start and self.host.best_step and self.config.train.restore_best:
            self._restore_best()

    def _restore_best(self) -> None:
        """The best weights the checkpoint's host state points to (best/, written just before the first
        checkpoint after its step, and at the run's end). Unreadable (a crash while a later best overwrote it,
        or a disk that lost it): the run restarts from scratch, which reproduces them."""
        try:
            self.best = self.prog.place_weights(weights_lib.load_weights(self.best_dir)[0])
        except Exception as e:  # noqa: BLE001 - any unreadable best/: redo the run rather than report other weights
            log.warning("%s: the best weights (step %d) are unreadable (%s); restarting the run from scratch",
                        self.run_dir, self.host.best_step, str(e).splitlines()[0][:160] if str(e) else type(e).__name__)
            for step in self.manager.all_steps():
                self.manager.delete(step)
            self.host, self.best = HostState(), None
            self._fresh(0)

    def _fresh(self, step: int) -> None:
        self.start, self.phase_i = step, self.plan.phase_index(step)
        phase = self.plan.phases[self.phase_i]
        self.steps = self.prog.steps(phase, self.feats.start(phase))
        self.state = self.prog.fresh_state(self.steps.tx)

    def _restore_step(self, step: int) -> bool:
        self._fresh(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self.state)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), host=ocp.args.JsonRestore()))
            self.state, self.host = restored.state, HostState.from_json(restored.host)
            return True
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back, and say so
            log.warning("%s: the checkpoint of step %d is unreadable (%s: %s); deleting it and starting from "
                        "the one before it, or from scratch", self.run_dir, step, type(e).__name__,
                        str(e).splitlines()[0][:160] if str(e) else "")
            self.manager.delete(step)
            return False

    def open_tracker(self, wandb_dir, group: str, name: str, run_id: str) -> None:
        s, plan = self.s, self.plan
        resolved = self.config.to_dict()
        resolved.update(frozen_depth_resolved=s.frozen_depth, num_units=s.model.num_units,
                        total_steps=s.total_steps, trainable_params=self.trainable_params,
                        init_resolved=self.init_path or self.config.init,
                        phases=[dataclasses.asdict(p) for p in plan.phases], runtime=self.runtime)
        # multi-host: one process writes metrics.jsonl and W&B
        self.tracker = RunTracker(self.run_dir, wandb_cfg=self.config.wandb, group=group, name=name, run_id=run_id,
                                  config=resolved, wandb_dir=wandb_dir, resume_step=self.start,
                                  keep_lines=self.host.metrics_lines if self.start else 0) \
            if distributed.is_writer() else _NoTracker()
        if self.start == 0:
            self.tracker.log({"step": 0, "event": "start", "transfer": s.transfer_report,
                              "trainable_params": self.trainable_params, "total_steps": s.total_steps,
                              **self.feats.summary()})
            self._log_phase_start(0)

    def _log_phase_start(self, step: int) -> None:
        phase = self.plan.phases[self.phase_i]
        self.tracker.log({"step": step, "event": "phase_start", "phase": self.phase_i + 1, "phase_name": phase.name,
                          "frozen_depth": self.s.depth(phase), "trainable_params": self.prog.trainable_count(phase),
                          "feature_path": self.feats.path(phase)})

    # ---- the step loop

    def loop(self, progress: bool, name: str, stop_at_step: int | None) -> int:
        """Trains from the restored step to the end (or to an early stop, or `stop_at_step`); the last step run."""
        s, timer = self.s, self.timer
        with timer.phase("data"):
            self.batches = self._train_batches(self.start)
        if s.data.train_ids is not None and distributed.is_writer():
            np.save(self.run_dir / "train_ids.npy", s.data.train_ids)  # the drawn training examples (TFDS ids)
        bar = progress_bar(progress, s.total_steps, self.start, name)
        # the train metrics of steps after the last log row, as the checkpoint kept them (float32, as the
        # device returned them), so the first row after a resume averages the same steps
        pending = [{k: np.float32(v) for k, v in m.items()} for m in self.host.pending]
        step = self.start
        try:
            for step in range(self.start + 1, s.total_steps + 1):
                with timer.phase("data"):  # waiting for the batch (the loaders prepare them ahead)
                    batch = next(self.batches)
                pending = self._step(step, batch, pending, bar)
                if bar:
                    bar.update(1)
                if self.host.stopped_early or (stop_at_step is not None and step >= stop_at_step):
                    break
        finally:
            self.batches.close()  # the loaders' worker processes end with the loop
            if bar:
                bar.close()
            with timer.phase("checkpoints"):
                self.manager.wait_until_finished()
        return step

    def _train_batches(self, start: int):
        """Batches for step indices start.. (the same examples on either path: the sampler is the run's),
        read from the current phase's cached activations on the cached path, on the devices ahead of the
        step (DevicePrefetch)."""
        s, config = self.s, self.config
        data = self.feats.train_data(self.plan.phases[self.phase_i])
        host = pipeline.train_batches(data, config.data.batch_size, config.seed, start, s.total_steps,
                                      config.data.threads, config.data.prefetch, workers=config.data.workers,
                                      sampler=pipeline.train_sampler(config.data, s.data, config.seed))
        return DevicePrefetch(host, self.data_sharding)

    def _step(self, step: int, batch: dict, pending: list, bar) -> list:
        """One step: train, then what falls due at it; returns the train metrics not logged yet."""
        phase, timer = self.plan.phases[self.phase_i], self.timer
        last_phase = self.phase_i == len(self.plan.phases) - 1
        last = step == self.s.total_steps
        boundary = last or step == phase.end
        hp = {"lr": self.plan.lrs[step - 1], "momentum": self.plan.momenta[step - 1],
              "class_weights": self.s.class_weights}
        logged = step % self.config.train.log_every == 0 or boundary
        evaluated = step % self.eval_every == 0 or boundary
        with timer.phase("training"):
            self.state, m = self.steps.train(self.state, batch, hp, self.prog.anchor)
            if logged or evaluated:  # the step's work ends here, not in the logging or evaluation after it
                jax.block_until_ready(m)
        pending.append(m)
        if logged:
            with timer.phase("reporting"):
                self._log_train(step, pending, hp, bar)
            pending = []
        self.val_now = self.test_now = None
        self.kinds_now = {}
        with timer.phase("evaluation"):
            if evaluated:
                self._evaluate(step, last_phase)
            self._run_extras(step, evaluated)
        if step == phase.end and not last_phase:
            with timer.phase("training"):
                self._switch_phase(step)
        if self._checkpoint_due(step, evaluated, last):
            with timer.phase("checkpoints"):
                self._checkpoint(step, pending)
        return pending

    def _checkpoint_due(self, step: int, evaluated: bool, last: bool) -> bool:
        """At train.checkpoint_every's cadence (0: at evals, the first one and then at most one per
        train.checkpoint_seconds), never at the run's last step or an early stop: the run's result follows at
        once, and a crash before it resumes from the checkpoint before."""
        if last or self.host.stopped_early:
            return False
        if self.ckpt_every:
            return step % self.ckpt_every == 0
        if not evaluated:
            return False
        wait = self.config.train.checkpoint_seconds  # after the first: at most one per `wait` seconds
        # multi-host: process 0's clock decides for all (a checkpoint is a collective)
        return distributed.agree(self.last_save is None or time.monotonic() - self.last_save >= wait)

    def _checkpoint(self, step: int, pending: list) -> None:
        """The best weights (if they changed since last written), then the state and host record of `step`,
        saved asynchronously (orbax writes the files while the next steps train)."""
        self._write_best()  # before the checkpoint whose host state points to them
        self.host.pending = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
        self.host.metrics_lines = self.tracker.sync()  # the rows this checkpoint's resume keeps
        self.last_save = time.monotonic()
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(self.state),
                                                        host=ocp.args.JsonSave(self.host.to_json())), force=True)

    def _write_best(self) -> None:
        if self.best is not None and not self.best_written:
            weights_lib.save_weights(self.best_dir, self.best, self.s.meta, {"step": self.host.best_step})
            self.best_written = True

    def _log_train(self, step: int, pending: list, hp: dict, bar) -> None:
        vals = sharding.to_host(pending)
        loss = float(np.mean([v["loss"] for v in vals]))
        if not math.isfinite(loss) or loss > DIVERGED_LOSS:
            raise TrainingFailed(f"loss became {loss:.4g} by step {step} (diverged; learning rate "
                                 f"{float(hp['lr']):.3g})")
        self.tracker.log({"step": step, "train_loss": loss,  # and the task's train metrics (train_accuracy)
                          **{f"train_{k}": float(np.mean([v[k] for v in vals])) for k in vals[0] if k != "loss"},
                          "learning_rate": float(hp["lr"]), "momentum": float(hp["momentum"]),
                          "phase": self.phase_i + 1})
        if bar:
            bar.set_postfix(loss=f"{loss:.3f}")

    # ---- evaluation and selection

    def _weights(self, kind: str | None = None) -> tuple:
        """(params, batch stats) of the current weights of `kind`: "raw" (the trained ones) or "ema" (their
        moving average); by default the kind the run selects, tests and exports (train.ema_select)."""
        if (kind or self.selected) == "ema":
            return recipes.ema_weights(self.state["params"], self.state["ema"])
        return self.state["params"], self.state["batch_stats"]

    def _evaluate(self, step: int, last_phase: bool) -> None:
        """Validation (and with train.eval_test, test: a curve, never used for selection) of each kind of
        weights, then the best step and early stopping on the selected kind; the best weights are kept in
        memory (best/ gets them at the next checkpoint and at the end)."""
        record = {"step": step}
        for kind in self.kinds:  # val_accuracy, val_loss (the raw weights), ema_val_accuracy, ...
            prefix = "" if kind == "raw" else f"{kind}_"
            splits = (("val", self.val), ("test", self.test)) if self.eval_test else (("val", self.val),)
            for name, evaluator in splits:
                score = self.kinds_now[name, kind] = evaluator.counts(*self._weights(kind))
                record.update({f"{prefix}{name}_{k}": v for k, v in score.values().items()})
        val = self.val_now = self.kinds_now["val", self.selected]
        if self.eval_test:
            self.test_now = self.kinds_now["test", self.selected]
            self.host.saw_test(self.test_now.metric)
        self.tracker.log(record)
        value = -val.loss if self.metric_name == "val_loss" else val.metric
        if self.host.observe(step, value, val, last_phase=last_phase, patience=self.patience,
                             phase=self.plan.phases[self.phase_i].name) and self.track_best:
            self.best = self.prog.copy_weights(*self._weights())
            self.best_written = False

    def _run_extras(self, step: int, evaluated: bool) -> None:
        """config.evals' evaluators due at `step` (every 0: with validation; k: every k steps), one row."""
        row = {"step": step}
        for name, ev in self.extras.items():
            if (ev.every == 0 and evaluated) or (ev.every > 0 and step % ev.every == 0):
                row.update({f"{name}/{k}": v for k, v in ev.run(*self._weights())})
        if len(row) > 1:
            self.tracker.log(row)

    def _switch_phase(self, step: int) -> None:
        """The end of a phase: its metrics, then the next phase's steps and optimizer state."""
        phase, val = self.plan.phases[self.phase_i], self.val_now  # phase ends are always evaluated
        test = self.test_now = self.test_now or self.test.counts(*self._weights())
        m = self.metric
        ended = {"phase": self.phase_i + 1, "name": phase.name, "step": step, f"val_{m}": val.metric,
                 "val_loss": val.loss, f"test_{m}": test.metric}
        self.host.phases = list(self.host.phases) + [ended]
        self.tracker.log({"step": step, "event": "phase_end", **{f"phase_{k}": v for k, v in ended.items()}})
        self.phase_i += 1
        start = self.feats.start(phase)
        phase = self.plan.phases[self.phase_i]
        self.steps = self.prog.steps(phase, self.feats.start(phase))
        if self.feats.start(phase) != start:  # the next phase reads other inputs (e.g. images after a cached one)
            self.batches.close()
            self.batches = self._train_batches(step)
        self.state["opt_state"] = carry_over(self.state["opt_state"],
                                             self.prog.init_opt(self.steps.tx, self.state["params"]))
        # selection starts again: the run reports its final phase's best step (best/ gets it), the best of any
        # phase stays in host.best_any_phase
        self.host.next_phase()
        self.best, self.best_written = None, True
        self._log_phase_start(step)

    # ---- finish

    def finish(self, step: int, t0: float) -> dict:
        """Test metrics at the selected step (the final phase's best validation step with train.restore_best,
        else the last), the exported weights, config.evals at those weights; returns the result's metrics."""
        host, timer = self.host, self.timer
        use_best = self.config.train.restore_best and self.best is not None
        final = dict(zip(("params", "batch_stats"), self._weights()))  # the selected kind's (train.ema_select)
        selected = self.best if use_best else final  # device arrays, sharded as trained: never gathered
        sel_weights = (selected["params"], selected["batch_stats"])
        with timer.phase("evaluation"):
            if use_best and host.best_step == step and self.test_now is not None:
                tested = self.test_now  # the best step is the last one, evaluated already
            else:
                tested = self.test.counts(*sel_weights)
            if use_best:
                val_acc, val_loss, best_step = host.best_val_metric, host.best_val_loss, host.best_step
            else:  # the last step's eval already measured these weights, unless nothing ran here
                val = self.val_now if self.val_now is not None else self.val.counts(*sel_weights)
                val_acc, val_loss, best_step = val.metric, val.loss, step
        with timer.phase("checkpoints"):
            exported = strategies.merged(self.config, selected)  # strategy.merge: the plain model's (LoRA, SSF)
            weights_lib.save_weights(self.run_dir / "weights", exported, self.s.meta, {"step": best_step})
            if use_best and not self.best_written and exported is selected:  # best/ becomes a copy of weights/
                weights_lib.copy_weights_dir(self.run_dir / "weights", self.best_dir)
                self.best_written = True
            self._write_best()
        with timer.phase("reporting"):
            if distributed.is_writer():
                durable.write_json(self.run_dir / "test_metrics.json",  # incl. the confusion matrix
                                   {**tested.detail(), "class_names": self.s.data.class_names})
        with timer.phase("evaluation"):
            extras = {f"{name}_{k}": v for name, ev in self.extras.items() for k, v in ev.run(*sel_weights)}
            extras.update(self._kinds_summary(tested, use_best))
        m, paths = self.metric, self.feats.summary()
        metrics = {
            f"val_{m}": val_acc, "val_loss": val_loss,
            # test_accuracy, test_loss, test_balanced_accuracy, test_macro_f1 | test_miou, ... | test_map, ...
            **{f"test_{k}": v for k, v in tested.summary().items()},
            "best_step": best_step, "steps": step,
            "stopped_early": host.stopped_early, "trainable_params": self.trainable_params,
            "frozen_depth_resolved": self.s.frozen_depth, "num_units": self.s.model.num_units,
            "num_classes": int(self.s.data.num_classes),  # the target's: chance is 1/num_classes (experiments)
            # the strategy in one cell (its keys are columns of their own only where a sweep varies them)
            "strategy_resolved": _strategy_summary(self.config.strategy, self.plan),
            "feature_path": paths["feature_path"],  # per phase: cached@k | input
            "wall_time": round(time.time() - t0 - self.tracker.init_seconds, 2),  # training, not W&B's start
        }
        if "feature_path_reason" in paths:  # why a phase trains from the images (the line the run printed)
            metrics["feature_path_reason"] = paths["feature_path_reason"]
        if self.eval_test:
            with timer.phase("evaluation"):
                final_test = self.test_now if self.test_now is not None else self.test.counts(*self._weights())
            metrics.update({f"final_test_{m}": final_test.metric,
                            f"best_seen_test_{m}": max(host.best_seen_test_metric or 0.0, final_test.metric)})
        for ended in host.phases:  # e.g. two_phase: the head-only phase's metrics next to the final ones
            for k in (f"val_{m}", f"test_{m}", "step"):
                metrics[f"phase{ended['phase']}_{k}"] = ended[k]
        metrics.update(plan_columns(self.plan, host.best_any_phase, m))
        metrics.update(extras)
        with timer.phase("reporting"):
            self.tracker.log({"step": step, "event": "end", **{f"final_{k}": v for k, v in metrics.items()}})
            self.tracker.finish(metrics)
        return metrics


    def _kinds_summary(self, tested, use_best: bool) -> dict:
        """With a weight EMA: the task's metric on val and test for each kind of weights at the last step
        (raw_val_accuracy, raw_test_accuracy, ema_val_accuracy, ema_test_accuracy), from the last step's eval
        where it measured them (it always measures val), else measured here."""
        if len(self.kinds) == 1:
            return {}
        out = {}
        for kind in self.kinds:
            for name, evaluator in (("val", self.val), ("test", self.test)):
                score = self.kinds_now.get((name, kind))
                if score is None and name == "test" and kind == self.selected and not use_best:
                    score = tested  # the selected kind at the last step: tested already
                if score is None:
                    score = evaluator.counts(*self._weights(kind))
                out[f"{kind}_{name}_{self.metric}"] = score.metric
        return out


class _NoTracker:
    """The tracker of the processes that do not write (multi-host: process 0 writes metrics and W&B; the
    checkpoint's host state, metrics_lines included, is the one process 0 saves)."""

    init_seconds = 0.0

    def log(self, metrics: dict) -> None:
        pass

    def sync(self) -> int:
        return 0

    def finish(self, summary: dict, failed: bool = False) -> None:
        pass


def plan_columns(plan: strategies.Plan, best_any_phase: dict | None, metric: str) -> dict:
    """The result's columns about the plan: with more than one phase, the best validation eval of any phase
    (best_any_phase_val_<metric>, _val_loss, _step, _name: the phase's name), beside the final phase's that the
    run reports; with a Shortfall (phases the run ends before), the final phase's frozen depth
    (frozen_depth_reached) and the one-line reason (plan_shortfall)."""
    out = {}
    if len(plan.phases) > 1 and best_any_phase:
        out.update({f"best_any_phase_val_{metric}": best_any_phase["val_metric"],
                    "best_any_phase_val_loss": best_any_phase["val_loss"],
                    "best_any_phase_step": best_any_phase["step"], "best_any_phase_name": best_any_phase["phase"]})
    if plan.shortfall is not None:
        out.update(frozen_depth_reached=plan.shortfall.frozen_depth_reached, plan_shortfall=plan.shortfall.why)
    return out


def _strategy_summary(cfg, plan: strategies.Plan) -> str:
    parts = [cfg.name]
    if len(plan.phases) > 1:
        parts.append("phases at " + "/".join(str(p.start) for p in plan.phases[1:]))
    if cfg.lr_decay != 1:
        parts.append(f"lr_decay {cfg.lr_decay:g}")
    parts.append(f"l2_sp {plan.l2sp[0]:g}/{plan.l2sp[1]:g}" if plan.l2sp else
                 f"weight_decay {plan.weight_decay:g}" if plan.weight_decay else "no weight decay")
    if plan.regularizer is not None and not plan.l2sp:  # delta, bss, stochnorm, co_tuning
        parts.append(plan.regularizer.summary())
    if not plan.update_stats:
        parts.append("source BN statistics")
    return ", ".join(parts)


class DevicePrefetch:
    """`batches` (host batches, in order) put on the devices `depth` ahead, sharded as the train step takes
    them (`batch_sharding`): the next batch's transfer overlaps the step before it (as flax's
    prefetch_to_device and big_vision's prefetch_iterator). The k-th batch out is the k-th of `batches`, so a
    resumed run reads what the uninterrupted one would; batches put ahead of a stop are dropped. `close()`
    closes `batches` (their worker processes end)."""

    def __init__(self, batches, batch_sharding, depth: int = DEVICE_PREFETCH):
        self.batches, self.sharding, self.depth = batches, batch_sharding, depth
        self.queue: collections.deque = collections.deque()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        for batch in itertools.islice(self.batches, self.depth - len(self.queue)):
            self.queue.append(to_device(batch, self.sharding))
        if not self.queue:
            raise StopIteration
        return self.queue.popleft()

    def close(self) -> None:
        self.queue.clear()
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()


def progress_bar(enabled: bool, total: int, start: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, desc=name[:40], leave=False, dynamic_ncols=True)
