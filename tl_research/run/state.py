"""What the host keeps between a run's steps and across a resume: `HostState`, the loop's decisions so far
(the best eval of the current phase and of any phase, early stopping's count, the ended phases' metrics, train
metrics not logged yet), saved as JSON in each checkpoint next to the arrays.

Selection is per phase: `best_*` are the current phase's best eval, started again at each phase switch
(`next_phase`), so at the end they are the final phase's, which the run reports and exports (a two_phase run's
result is the fine-tuned model's, never its head-only phase's). `best_any_phase` keeps the best eval of the
whole run, whichever phase it fell in (the result's best_any_phase_* columns).

Its names are the task's metric's neutral ones (`best_val_metric`: accuracy, mIoU or mAP); checkpoints written
before the rename (`best_val_accuracy`, `best_seen_test_accuracy`) still resume (`HostState.from_json`).
"""
from __future__ import annotations

import dataclasses

# the JSON keys older checkpoints used -> the field that holds that value now
RENAMED = {"best_val_accuracy": "best_val_metric", "best_seen_test_accuracy": "best_seen_test_metric"}


@dataclasses.dataclass
class HostState:
    """What the loop has decided so far, checkpointed as JSON next to the arrays so that a resumed run
    selects, stops and reports as the uninterrupted one would."""

    best_metric: float | None = None  # the selection metric of the current phase's best eval (higher is better)
    best_step: int = 0  # 0: no eval in the current phase yet
    evals_since_best: int = 0  # in the last phase: early stopping's count
    stopped_early: bool = False
    # the task's metric (accuracy, mIoU or mAP) and loss at the best eval, and with train.eval_test the best
    # test value of that metric at any eval
    best_val_metric: float | None = None
    best_val_loss: float | None = None
    best_seen_test_metric: float | None = None
    phases: list[dict] = dataclasses.field(default_factory=list)  # metrics at the end of each finished phase
    pending: list[dict] = dataclasses.field(default_factory=list)  # train metrics of steps not logged yet
    metrics_lines: int | None = None  # rows of metrics.jsonl when the checkpoint was saved (resume cuts back)
    # the best eval in any phase: {"metric": its selection metric, "step", "phase": the phase's name,
    # "val_metric", "val_loss"}; None before the first eval
    best_any_phase: dict | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved) -> "HostState":
        """The state a checkpoint's JSON holds, in today's names or the ones older checkpoints used (RENAMED)."""
        saved = {**{RENAMED.get(k, k): v for k, v in saved.items() if k in RENAMED},
                 **{k: v for k, v in saved.items() if k not in RENAMED}}
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})

    def observe(self, step: int, value: float, val, *, last_phase: bool, patience: int, phase: str = "") -> bool:
        """Records the validation eval of `step` (`value`: its selection metric) in phase `phase` (its name);
        True if it is the current phase's new best. Patience runs out only in the last phase: earlier phases
        always finish."""
        if self.best_any_phase is None or value > self.best_any_phase["metric"]:
            self.best_any_phase = {"metric": value, "step": step, "phase": phase, "val_metric": val.metric,
                                   "val_loss": val.loss}
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_step, self.evals_since_best = value, step, 0
            self.best_val_metric, self.best_val_loss = val.metric, val.loss  # val: a task's Score
            return True
        if last_phase:
            self.evals_since_best += 1
            if patience and self.evals_since_best >= patience:
                self.stopped_early = True
        return False

    def next_phase(self) -> None:
        """A phase ended: the next one selects its own best (early stopping counts from its first eval)."""
        self.best_metric, self.best_step, self.best_val_metric, self.best_val_loss = None, 0, None, None
        self.evals_since_best = 0

    def adopt(self, phase_start: int, phase_name) -> None:
        """A checkpoint written before selection was per phase (no `best_any_phase`): its best, the best of any
        phase so far, becomes `best_any_phase` (named by `phase_name(step)`), and the current phase, which
        starts after step `phase_start`, selects its own best unless that best fell in it."""
        if self.best_any_phase is not None or not self.best_step:
            return
        self.best_any_phase = {"metric": self.best_metric, "step": self.best_step,
                               "phase": phase_name(self.best_step), "val_metric": self.best_val_metric,
                               "val_loss": self.best_val_loss}
        if self.best_step <= phase_start:
            self.next_phase()

    def saw_test(self, value: float) -> None:
        """A test eval's metric (train.eval_test): the best seen so far is kept."""
        seen = self.best_seen_test_metric
        self.best_seen_test_metric = value if seen is None else max(seen, value)
