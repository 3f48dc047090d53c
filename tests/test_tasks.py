"""Segmentation and detection through the one trainer (config.task): transfer from a classification
checkpoint leaves the frozen units bitwise unchanged while the dense head trains on their outputs, a killed
run resumes to the same final mIoU / mAP, and a bad task setting is one ConfigError before any work."""
import numpy as np
import pytest

from tl_research import config as C

from tl_research.run import setup, trainer
from tl_research.checkpoints import weights as weights_lib
from tl_research.data import digit_scenes, registry
from tl_research.core.errors import ConfigError
from tl_research.models.base import ModelMeta

SMALL = {"train": 24, "val": 8, "test": 8}


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    """The two scene datasets, prepared small (the builders' splits cut to SMALL) once for this module."""
    d = tmp_path_factory.mktemp("scenes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(digit_scenes._DigitScenes, "SPLIT_SIZES", SMALL)
        for name in ("mnist_segmentation", "mnist_detection"):
            registry.BUILDERS[name](data_dir=str(d), file_format="array_record").download_and_prepare()
    return str(d)


def _config(scenes_dir, kind, **overrides):
    c = C.base_config()
    c.name, c.task = "test", kind
    c.data.name, c.data.data_dir = f"mnist_{kind}", scenes_dir
    c.data.image_size, c.data.batch_size, c.data.eval_batch_size = 32, 8, 8
    c.model.stage_sizes, c.model.width = (1, 1), 4  # units: stem (32x32), stage 1 (32x32), stage 2 (16x16)
    c.schedule.lr = 0.05
    c.train.steps, c.train.eval_every, c.train.checkpoint_every, c.train.log_every = 6, 3, 3, 2
    c.wandb.mode = "disabled"
    for k, v in overrides.items():
        C.set_value(c, k, v)
    C.resolve_task_targets(c)
    C.validate(c)
    return c


def _classifier_weights(tmp_path, model_cfg):
    """A grey-input digit classifier's weights (10 classes, random): what a source run would export."""
    from tl_research import models
    d = tmp_path / "classifier"
    weights_lib.save_weights(d, models.build(model_cfg, 10, 1, seed=7), ModelMeta(num_classes=10))
    return weights_lib.load_weights(d)[0], str(d)


@pytest.mark.parametrize("task, head, metric", [
    ("segmentation", {"model.decoder": "unet", "model.skips": (1,)}, "test_miou"),
    ("detection", {"model.fpn_units": (1, 2), "schedule.lr": 0.01}, "test_map"),
])
def test_a_transferred_dense_run_keeps_frozen_units_and_resumes_to_the_same_result(
        scenes_dir, tmp_path, task, head, metric):
    source, init = _classifier_weights(tmp_path, _config(scenes_dir, task).model)
    # units 0 and 1 frozen; the head reads unit 1 (a U-Net skip, an FPN level) and unit 2
    cfg = _config(scenes_dir, task, init=init, frozen_depth=2, augment=("flip",), **head)
    start = weights_lib.flat_state(setup.setup(cfg).model)
    cache = trainer.StepCache()  # the three runs share compiled steps
    whole = trainer.run(cfg, tmp_path / "whole", progress=False, cache=cache)
    part = trainer.run(cfg, tmp_path / "resumed", progress=False, cache=cache, stop_at_step=4)
    resumed = trainer.run(cfg, tmp_path / "resumed", progress=False, cache=cache)
    assert whole.status == resumed.status == "done" and part.status == "interrupted", whole.reason
    for key in (metric, "test_loss", f"val_{metric[5:]}", "best_step"):
        assert resumed.metrics[key] == whole.metrics[key], key
    assert np.isfinite(whole.metrics["test_loss"]) and whole.metrics["test_loss"] > 0
    if task == "segmentation":  # six steps give a non-zero mIoU; a detector's mAP is still 0 there, so its
        assert 0.0 < whole.metrics[metric] <= 1.0  # resume is held to its loss and its weights, bit for bit
    resumed_weights = weights_lib.load_weights(tmp_path / "resumed" / "weights")[0]

    final = weights_lib.load_weights(tmp_path / "whole" / "weights")[0]
    for coll in ("params", "batch_stats"):
        for k, v in final[coll].items():
            np.testing.assert_array_equal(resumed_weights[coll][k], v, err_msg=k)
    for coll in ("params", "batch_stats"):
        for k, v in start[coll].items():
            if k.startswith(("units.0.", "units.1.")):  # frozen: bitwise the loaded source weights
                np.testing.assert_array_equal(final[coll][k], v, err_msg=k)
                if "units.0.conv" not in k:  # (the stem's conv is adapted from 1 to 3 input channels)
                    np.testing.assert_array_equal(v, source[coll][k], err_msg=k)
    assert any(not np.array_equal(final["params"][k], v) for k, v in start["params"].items()
               if k.startswith("units.2."))  # the unfrozen unit trained
    scratch = weights_lib.flat_state(setup.setup(_config(scenes_dir, task, frozen_depth=2, **head)).model)
    heads = [k for k in start["params"] if k.startswith("head.")]
    assert heads and all(np.array_equal(start["params"][k], scratch["params"][k]) for k in heads)  # fresh
    # the head's input from frozen unit 1 is that unit's forward output: the weights reading it got gradients
    # (a U-Net stage concatenates [upsampled, skip]: the skip's input channels follow decoder_width's)
    reader, skip_in = (("head.stages.0.kernel", cfg.model.decoder_width) if task == "segmentation"
                       else ("head.fpn.lateral.0.kernel", 0))
    assert np.abs(final["params"][reader] - start["params"][reader])[:, :, skip_in:].max() > 0, reader


def test_bad_task_settings_are_one_config_error_before_any_work(scenes_dir):
    with pytest.raises(ConfigError, match="config.task='segmentaton'.*classification, segmentation, detection"):
        _config(scenes_dir, "segmentation", **{"task": "segmentaton"})
    with pytest.raises(ConfigError, match="config.data.targets='detection'"):
        _config(scenes_dir, "segmentation", **{"data.targets": "detection"})
    with pytest.raises(ConfigError, match="config.train.early_stopping_metric='val_accuracy'.*val_miou"):
        _config(scenes_dir, "segmentation", **{"train.early_stopping_metric": "val_accuracy"})
    with pytest.raises(ConfigError, match="config.augment.*rotate"):
        _config(scenes_dir, "detection", augment=("rotate(10)",))
    with pytest.raises(ConfigError, match="config.model.skips"):
        _config(scenes_dir, "segmentation", **{"model.decoder": "unet", "model.skips": (5,)})
    with pytest.raises(ConfigError, match="config.evals"):
        _config(scenes_dir, "detection", **{"data.extra_test_sets": ("mnist_detection_shifted",)})
    with pytest.raises(ConfigError, match="config.train.background_weight=0.5.*task=detection.*allowed: 1.0"):
        _config(scenes_dir, "detection", **{"train.background_weight": 0.5})
    with pytest.raises(ConfigError, match="config.train.background_weight=0.0.*> 0"):
        _config(scenes_dir, "segmentation", **{"train.background_weight": 0.0})
