"""The training loop: resuming a killed run, failures, early stopping (sharding over 8 devices and processes:
test_scaling.py)."""
import json

import numpy as np
import pytest

from tl_research.run import state, trainer
from tl_research.checkpoints.weights import load_weights
from tl_research.core.tracking import read_metrics


def test_checkpoints_at_every_eval_are_spaced_by_checkpoint_seconds_after_the_first(tiny_config, tmp_path):
    """train.checkpoint_every=0: the first eval's checkpoint, then evals train.checkpoint_seconds apart (0:
    every eval). Stopped at step 10 with evals at 4 and 8, the state on disk is step 4's with an hour between
    checkpoints and step 8's with none; both resume to the same run, with the same config identity."""
    from tl_research import config as C
    import orbax.checkpoint as ocp
    runs = {}
    for seconds in (3600.0, 0.0):
        cfg = tiny_config(**{"train.checkpoint_seconds": seconds})
        run_dir = tmp_path / f"every-{seconds:g}"
        assert trainer.run(cfg, run_dir, progress=False, stop_at_step=10).status == "interrupted"
        assert ocp.CheckpointManager(run_dir / "checkpoints").latest_step() == (4 if seconds else 8)
        runs[seconds] = trainer.run(cfg, run_dir, progress=False)
        assert C.config_hash(cfg) == C.config_hash(tiny_config())
    assert runs[3600.0].status == runs[0.0].status == "done"
    for key in ("val_accuracy", "test_accuracy", "best_step"):
        assert runs[3600.0].metrics[key] == runs[0.0].metrics[key], key
    with pytest.raises(Exception, match="train.checkpoint_seconds"):
        C.validate(tiny_config(**{"train.checkpoint_seconds": -1.0}))


def test_a_killed_run_resumes_and_ends_like_the_uninterrupted_run(tiny_config, tmp_path):
    # killed at step 6: a checkpoint (every 3 steps) between two log rows (every 4 steps)
    cfg = tiny_config(**{"model.dropout": 0.2, "train.checkpoint_every": 3, "train.log_every": 4})
    whole = trainer.run(cfg, tmp_path / "whole", progress=False)
    part = trainer.run(cfg, tmp_path / "resumed", progress=False, stop_at_step=6)
    assert part.status == "interrupted"
    assert not (tmp_path / "resumed" / trainer.RESULT_FILE).exists()
    with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 7, "train_lo')  # the process died mid-line
    resumed = trainer.run(cfg, tmp_path / "resumed", progress=False)
    assert resumed.status == whole.status == "done"
    for key in ("val_accuracy", "test_accuracy", "test_loss", "best_step"):
        assert resumed.metrics[key] == whole.metrics[key], key
    # the best weights (kept in memory, written with the checkpoints and at the end) and the exported ones
    # are those of the uninterrupted run
    for d in ("best", "weights"):
        (wa, _), (wb, _) = (load_weights(tmp_path / r / d) for r in ("whole", "resumed"))
        for coll in wa:
            assert wa[coll].keys() == wb[coll].keys() and wa[coll]
            for k in wa[coll]:
                np.testing.assert_array_equal(wa[coll][k], wb[coll][k], err_msg=f"{d} {k}")
    # the resumed log reads as if the run had never stopped: the same rows, the same values (the row of
    # step 8 averages steps 5 to 8 in both), one start and one end event
    a, b = (_without_wall_clock(tmp_path / d / "metrics.jsonl") for d in ("whole", "resumed"))
    assert a == b
    assert [r.get("event") for r in b].count("start") == [r.get("event") for r in b].count("end") == 1


def _without_wall_clock(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if "wall_time" not in k}
            for line in path.read_text().splitlines()]


def test_metrics_file_has_the_documented_fields(tiny_config, tmp_path):
    trainer.run(tiny_config(), tmp_path / "r", progress=False)
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    train = [r for r in rows if "train_loss" in r]
    evals = [r for r in rows if "val_accuracy" in r]
    assert train and all({"step", "train_loss", "learning_rate"} <= set(r) for r in train)
    assert [r["step"] for r in evals] == [4, 8, 12]
    assert (tmp_path / "r" / "checkpoints").is_dir() and (tmp_path / "r" / "weights" / "meta.json").exists()


def test_a_diverging_run_fails_with_a_one_line_reason(tiny_config, tmp_path):
    result = trainer.run(tiny_config(**{"schedule.lr": 3e38}), tmp_path / "nan", progress=False)
    assert result.status == "failed"
    assert "loss became" in result.reason and "\n" not in result.reason


def test_early_stopping_stops_and_reports_the_best_step(tiny_config, tmp_path):
    # a learning rate of ~0 cannot improve validation accuracy after the first eval
    cfg = tiny_config(**{"schedule.lr": 1e-9, "train.early_stopping_patience": 2, "train.steps": 40})
    result = trainer.run(cfg, tmp_path / "es", progress=False)
    assert result.metrics["stopped_early"] is True
    assert result.metrics["best_step"] == 4
    assert result.metrics["steps"] == 12  # two evals without improvement after step 4


def test_imbalanced_run_records_its_examples_weights_and_per_class_metrics(tiny_config, tmp_path):
    from tl_research.data import pipeline
    from tl_research.data.sampling import class_weights
    over = {"data.imbalance_ratio": 10.0, "data.per_class": 60, "train.steps": 4, "train.log_every": 1}
    labels = pipeline.load(tiny_config(**over).data, seed=0).train.labels
    counts = np.bincount(labels, minlength=5)
    over["data.batch_size"] = len(labels)  # the first batch is one pass over the training set
    cfg = tiny_config(**over, **{"train.class_weights": "inverse"})
    result = trainer.run(cfg, tmp_path / "lt", progress=False)
    assert result.status == "done", result.reason
    ids = np.load(tmp_path / "lt" / "train_ids.npy")
    assert len(ids) == len(set(ids.tolist())) < 5 * 60  # long-tailed: class 0 keeps 60, the others fewer
    detail = json.loads((tmp_path / "lt" / "test_metrics.json").read_text())
    confusion = np.array(detail["confusion"])
    assert confusion.shape == (5, 5) and len(detail["per_class_recall"]) == 5
    assert np.trace(confusion) / confusion.sum() == pytest.approx(result.metrics["test_accuracy"])
    assert 0 <= result.metrics["test_balanced_accuracy"] <= 1 and 0 <= result.metrics["test_macro_f1"] <= 1

    # The head starts at zero, so every example's first-step loss is log(5): the weighted mean is then
    # log(5) * mean_i w[y_i] over the batch, the whole training set here.
    plain = trainer.run(tiny_config(**over), tmp_path / "plain", progress=False)
    assert plain.status == "done", plain.reason
    weighted, unweighted = ([r["train_loss"] for r in read_metrics(tmp_path / d / "metrics.jsonl") if "train_loss" in r]
                            for d in ("lt", "plain"))
    w = (1 / counts) / np.mean(1 / counts)  # inverse frequency, mean weight 1 over the classes
    assert counts.min() < counts.max() and np.sum(counts * w) / counts.sum() < 0.8
    assert unweighted[0] == pytest.approx(np.log(5), rel=1e-6)
    assert weighted[0] == pytest.approx(np.log(5) * np.sum(counts * w) / counts.sum(), rel=1e-5)
    assert not np.allclose(weighted[1:], unweighted[1:])  # and the updates differ


def test_a_run_with_on_device_augmentation_trains(tiny_config, tmp_path):
    # The head starts at zero, so step 1's loss is log(5) whatever the images; from step 2 on the losses
    # depend on the images each step saw: augmented ones differ from the plain run's, the same for one seed.
    over = {"train.steps": 4, "train.eval_every": 4, "train.log_every": 1}

    def losses(name, augment):
        result = trainer.run(tiny_config(augment=augment, **over), tmp_path / name, progress=False)
        assert result.status == "done", result.reason
        return np.array([r["train_loss"] for r in read_metrics(tmp_path / name / "metrics.jsonl")
                         if "train_loss" in r])

    ops = ("flip", "crop(2)", "mixup(0.2)")
    aug, again, plain = losses("aug", ops), losses("again", ops), losses("plain", ())
    assert len(aug) == 4 and np.all(np.isfinite(aug))
    np.testing.assert_array_equal(aug, again)  # deterministic for the seed
    assert np.min(np.abs(aug[1:] - plain[1:])) > 1e-4, (aug, plain)  # every later step saw other images


def test_the_host_state_reads_the_json_that_checkpoints_hold():
    saved = {"best_metric": 0.2, "best_step": 4, "evals_since_best": 1, "stopped_early": False,
             "best_val_metric": 0.2, "best_val_loss": 1.6, "best_seen_test_metric": None,
             "phases": [{"phase": 1, "name": "head", "step": 4, "val_accuracy": 0.2, "val_loss": 1.6,
                         "test_accuracy": 0.3}],
             "pending": [{"loss": 1.5, "accuracy": 0.25}], "metrics_lines": 7,
             "best_any_phase": {"metric": 0.2, "step": 4, "phase": "head", "val_metric": 0.2, "val_loss": 1.6}}
    host = state.HostState.from_json(saved)
    assert host.best_step == 4 and host.phases[0]["name"] == "head"
    assert list(host.to_json().items()) == list(saved.items())  # the same JSON, key order included


def test_the_host_state_reads_the_names_older_checkpoints_used():
    # before the metric-neutral names, the task's metric (accuracy, mIoU or mAP) was kept under *_accuracy
    old = {"best_metric": 0.4, "best_step": 8, "evals_since_best": 0, "stopped_early": False,
           "best_val_accuracy": 0.4, "best_val_loss": 1.2, "best_seen_test_accuracy": 0.45, "phases": [],
           "pending": [], "metrics_lines": 9}
    host = state.HostState.from_json(old)
    assert (host.best_val_metric, host.best_seen_test_metric) == (0.4, 0.45)
    assert host == state.HostState.from_json({state.RENAMED.get(k, k): v for k, v in old.items()})
    assert "best_val_accuracy" not in host.to_json()


def test_a_checkpoint_with_the_old_host_state_names_resumes_like_the_uninterrupted_run(tiny_config, tmp_path):
    """A run dir checkpointed before HostState's renames resumes to the same result. At a learning rate of ~0
    the best eval stays step 4's, before the checkpoint of step 6, so the reported val_accuracy is the one
    that checkpoint's host state carries under its old name."""
    cfg = tiny_config(**{"schedule.lr": 1e-9, "train.checkpoint_every": 3, "train.restore_best": True,
                         "train.eval_test": True})
    whole = trainer.run(cfg, tmp_path / "whole", progress=False)
    assert trainer.run(cfg, tmp_path / "old", progress=False, stop_at_step=6).status == "interrupted"
    host_file = tmp_path / "old" / "checkpoints" / "6" / "host" / "metadata"  # orbax's JsonSave of the host state
    old_names = {new: old for old, new in state.RENAMED.items()}
    host_file.write_text(json.dumps({old_names.get(k, k): v for k, v in json.loads(host_file.read_text()).items()}))
    assert "best_val_accuracy" in host_file.read_text()
    resumed = trainer.run(cfg, tmp_path / "old", progress=False)
    assert whole.status == resumed.status == "done" and whole.metrics["best_step"] == 4
    assert {k: v for k, v in resumed.metrics.items() if k != "wall_time"} == \
        {k: v for k, v in whole.metrics.items() if k != "wall_time"}
