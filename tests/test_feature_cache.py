"""Frozen-prefix feature caching: a cached run is the run from the images, its cache keys follow the weights,
the data and the preprocessing, it resumes exactly, and phased strategies use it in their frozen phases."""
import types

import numpy as np
import pytest

from conftest import tiny
from tl_research import feature_cache, trainer
from tl_research.data import pipeline
from tl_research.errors import ConfigError
from tl_research.tracking import read_metrics


# one StepCache (its compiled steps and its feature Store) for the module's runs, as a sweep shares one
CACHE = trainer.StepCache()


@pytest.fixture(scope="module")
def source(data_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("cache_source") / "source"
    r = trainer.run(tiny(data_dir, **{"data.classes": (5, 6, 7, 8, 9), "train.steps": 6}), d, progress=False,
                    cache=CACHE)
    assert r.status == "done", r.reason
    return str(d)


def _run(cfg, path, **kw):
    r = trainer.run(cfg, path, progress=False, cache=CACHE, **kw)
    assert r.status in ("done", "interrupted"), r.reason
    return r


def _losses(path) -> list[float]:
    return [r["train_loss"] for r in read_metrics(path / "metrics.jsonl") if "train_loss" in r]


@pytest.mark.parametrize("depth", [2, "all"])
def test_a_cached_run_equals_the_run_from_the_images(tiny_config, source, tmp_path, depth):
    cached = _run(tiny_config(init=source, frozen_depth=depth), tmp_path / "cached")
    images = _run(tiny_config(init=source, frozen_depth=depth, **{"train.feature_cache": False}), tmp_path / "images")
    k = 2 if depth == 2 else 3
    assert cached.metrics["feature_path"] == f"cached@{k}" and images.metrics["feature_path"] == "input"
    start = next(r for r in read_metrics(tmp_path / "images" / "metrics.jsonl") if r.get("event") == "start")
    assert start["feature_path_reason"] == "train.feature_cache is off"
    assert len(_losses(tmp_path / "cached")) == 6
    np.testing.assert_allclose(_losses(tmp_path / "cached"), _losses(tmp_path / "images"), rtol=0, atol=1e-5)
    for key in ("val_accuracy", "test_accuracy", "best_step", "test_balanced_accuracy"):
        assert cached.metrics[key] == images.metrics[key], key
    assert cached.metrics["test_loss"] == pytest.approx(images.metrics["test_loss"], abs=1e-5)
    if depth == "all":  # killed at step 6 (a checkpoint at every eval: 4, 8) and resumed: the cached run again
        part = _run(tiny_config(init=source, frozen_depth=depth), tmp_path / "resumed", stop_at_step=6)
        assert part.status == "interrupted"
        resumed = _run(tiny_config(init=source, frozen_depth=depth), tmp_path / "resumed")
        for key in ("val_accuracy", "test_accuracy", "test_loss", "best_step", "feature_path"):
            assert resumed.metrics[key] == cached.metrics[key], key
        assert _losses(tmp_path / "resumed") == _losses(tmp_path / "cached")


def test_a_phased_strategy_uses_the_cache_in_its_frozen_phase_only(tiny_config, source, tmp_path):
    over = {"init": source, "strategy.name": "two_phase", "strategy.boundary_steps": 4, "train.log_every": 1}
    cached = _run(tiny_config(**over), tmp_path / "cached")
    images = _run(tiny_config(**over, **{"train.feature_cache": False}), tmp_path / "images")
    rows = read_metrics(tmp_path / "cached" / "metrics.jsonl")
    assert [(r["step"], r["feature_path"]) for r in rows if r.get("event") == "phase_start"] == [
        (0, "cached@3"), (4, "input")]
    start = next(r for r in rows if r.get("event") == "start")
    assert start["feature_path_eval"] == "input"  # phase 2 trains every unit: evaluations read the images
    assert cached.metrics["feature_path"] == "cached@3,input"
    np.testing.assert_allclose(_losses(tmp_path / "cached"), _losses(tmp_path / "images"), rtol=0, atol=1e-5)
    for key in ("val_accuracy", "test_accuracy", "phase1_val_accuracy", "best_step"):
        assert cached.metrics[key] == images.metrics[key], key


def test_augmentation_and_dense_tasks_take_the_input_path_and_a_bad_value_names_the_key(tiny_config):
    from tl_research import models
    cfg = tiny_config(frozen_depth=2)
    model = models.abstract(cfg.model, 5, 1)
    assert feature_cache.input_path_reason(cfg, model, "classification") == ""
    assert "augmentation" in feature_cache.input_path_reason(tiny_config(augment=("flip",)), model, "classification")
    assert "several units" in feature_cache.input_path_reason(cfg, model, "segmentation")
    with pytest.raises(ConfigError, match=r"train.feature_cache"):
        feature_cache.check(types.SimpleNamespace(train={"feature_cache": "yes"}))


# ---------------------------------------------------------------------------------------------- keys, store

def _weights(seed=0):
    rng = np.random.default_rng(seed)
    params = {"units.0.conv.kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32),
              "units.1.conv.kernel": rng.normal(size=(3, 3, 4, 4)).astype(np.float32),
              "head.classifier.kernel": rng.normal(size=(4, 5)).astype(np.float32)}
    stats = {"units.0.bn.mean": rng.normal(size=4).astype(np.float32)}
    return params, stats


PRE = {"image_shape": [8, 8, 1], "value_range": [0.0, 1.0], "mean": [0.5], "std": [0.5], "precision": "float32"}
MODEL = {"name": "resnet_cifar", "width": 4, "head": "linear"}


def test_the_prefix_key_follows_the_prefix_weights_and_preprocessing_not_the_rest():
    params, stats = _weights()
    key = feature_cache.prefix_key(params, stats, 1, MODEL, PRE)
    assert key == feature_cache.prefix_key(*_weights(), 1, MODEL, PRE)  # a function of the values
    changed = {**params, "units.0.conv.kernel": params["units.0.conv.kernel"] + 1e-6}
    assert feature_cache.prefix_key(changed, stats, 1, MODEL, PRE) != key  # the source weights
    stat = {"units.0.bn.mean": stats["units.0.bn.mean"] * 2}
    assert feature_cache.prefix_key(params, stat, 1, MODEL, PRE) != key  # the BatchNorm statistics
    for name in ("units.1.conv.kernel", "head.classifier.kernel"):  # units after the prefix, the head
        assert feature_cache.prefix_key({**params, name: params[name] * 2}, stats, 1, MODEL, PRE) == key
    assert feature_cache.prefix_key(params, stats, 1, {**MODEL, "head": "mlp"}, PRE) == key
    for k, v in (("mean", [0.4]), ("std", [0.25]), ("value_range", [-1.0, 1.0]), ("image_shape", [16, 16, 1]),
                 ("precision", "bfloat16")):  # the preprocessing
        assert feature_cache.prefix_key(params, stats, 1, MODEL, {**PRE, k: v}) != key, k
    assert feature_cache.prefix_key(params, stats, 2, MODEL, PRE) != key  # the depth


def test_the_split_key_follows_the_data_subset_and_the_image_loading(tiny_config, data_dir):
    cfg = tiny_config(**{"data.train_examples": 100})
    data = pipeline.load(cfg.data, seed=0)
    data_cfg = cfg.data.to_dict()
    key = feature_cache.split_key(data_cfg, "train", data.train, data)
    other = pipeline.load(cfg.data, seed=1)  # another seed draws another 100 examples
    assert feature_cache.split_key(data_cfg, "train", other.train, other) != key
    assert feature_cache.split_key(data_cfg, "val", other.val, other) == feature_cache.split_key(
        data_cfg, "val", data.val, data)  # the validation split does not depend on the seed
    import dataclasses
    for change in ({"crop_pct": 0.875}, {"interpolation": "bicubic"}, {"image_shape": (16, 16, 1)}):
        assert feature_cache.split_key(data_cfg, "train", data.train, dataclasses.replace(data, **change)) != key
    assert feature_cache.split_key({**data_cfg, "name": "mnist_subset"}, "train", data.train, data) != key


def test_the_store_keeps_small_entries_in_memory_and_large_ones_on_disk(tmp_path):
    calls = []

    def fill(out):
        calls.append(out.shape)
        out[:] = np.arange(out.size, dtype=np.float32).reshape(out.shape)

    store = feature_cache.Store(memory_mb=1, disk_entry_mb=0.5)
    small, where = store.get("a", (10, 4), np.float32, fill, tmp_path)
    assert where == "computed" and store.get("a", (10, 4), np.float32, fill, tmp_path)[1] == "memory"
    shape = (2**16, 4)  # 1 MiB: on disk
    big, where = store.get("b", shape, np.float32, fill, tmp_path)
    assert where == "computed" and isinstance(big, np.memmap) and len(calls) == 2
    again, where = feature_cache.Store(disk_entry_mb=0.5).get("b", shape, np.float32, fill, tmp_path)
    assert where == "disk" and len(calls) == 2 and np.array_equal(again, big)  # another process reads it back
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    (tmp_path / "b.bin").write_bytes(b"torn")  # cut short: computed again
    assert feature_cache.Store(disk_entry_mb=0.5).get("b", shape, np.float32, fill, tmp_path)[1] == "computed"
