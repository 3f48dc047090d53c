"""Where a run's numbers go: metrics.jsonl always, W&B from a background thread that never fails a run."""
import ml_collections

from tl_research.core import tracking


def _tracker(tmp_path, mode):
    cfg = ml_collections.ConfigDict(dict(mode=mode, project="tl_research_test", entity="", tags=()))
    return tracking.RunTracker(tmp_path / "run", wandb_cfg=cfg, group="g", name="n", run_id="r",
                               config={"a": 1}, wandb_dir=tmp_path / "wandb")


def test_an_offline_wandb_run_is_written_from_the_background_thread(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    t = _tracker(tmp_path, "offline")
    t.log({"step": 1, "train_loss": 0.5})
    t.finish({"test_accuracy": 0.9})
    tracking.wait()
    assert [r["train_loss"] for r in tracking.read_metrics(tmp_path / "run" / "metrics.jsonl")] == [0.5]
    assert list((tmp_path / "wandb").rglob("*.wandb")), list((tmp_path / "wandb").rglob("*"))


def test_a_wandb_failure_never_stops_the_run(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no W&B here")
    monkeypatch.setattr(tracking, "_init_wandb", broken)
    t = _tracker(tmp_path, "offline")
    t.log({"step": 1, "train_loss": 0.5})
    t.log({"step": 2, "train_loss": 0.25})
    t.finish({"test_accuracy": 0.9})
    tracking.wait()  # the failed start was reported; the logs and the finish skipped it
    assert [r["step"] for r in tracking.read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
