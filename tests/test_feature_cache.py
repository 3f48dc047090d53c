"""Frozen-prefix feature caching: a cached run is the run from the images, its cache keys follow the weights,
the data and the preprocessing, it resumes exactly, and phased strategies use it in their frozen phases."""
import json
import types

import numpy as np
import pytest

from conftest import tiny
from tl_research.run import feature_cache, trainer
from tl_research.data import pipeline
from tl_research.core.errors import ConfigError
from tl_research.core.tracking import read_metrics


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
    from tl_research import models, tasks
    cfg = tiny_config(frozen_depth=2)
    model = models.abstract(cfg.model, 5, 1)
    classification, segmentation = tasks.get("classification"), tasks.get("segmentation")
    assert feature_cache.input_path_reason(cfg, model, classification) == ""
    assert "augmentation" in feature_cache.input_path_reason(tiny_config(augment=("flip",)), model, classification)
    assert feature_cache.input_path_reason(cfg, model, segmentation) == (
        "task segmentation: its head reads several units' outputs")
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


def _another(value):
    """A value of the same kind as `value` but not equal to it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_other"
    return [*value, 1] if isinstance(value, (list, tuple)) else [value]


def test_the_split_key_covers_every_data_key_of_base_config_but_those_not_decoding(tiny_config, data_dir):
    """A data key added to base_config() changes the split key unless feature_cache.NOT_DECODING names it (a key
    that never changes what an entry holds); a key missing from both would serve stale activations."""
    from tl_research import config as C
    cfg = tiny_config()
    data = pipeline.load(cfg.data, seed=0)
    data_cfg = json.loads(cfg.data.to_json())
    keys = set(C.base_config().data)
    assert feature_cache.NOT_DECODING <= keys, sorted(feature_cache.NOT_DECODING - keys)  # no stale entries
    assert set(feature_cache.data_identity(data_cfg)) == keys - feature_cache.NOT_DECODING
    key = feature_cache.split_key(data_cfg, "train", data.train, data)
    for k in sorted(keys):
        changed = feature_cache.split_key({**data_cfg, k: _another(data_cfg[k])}, "train", data.train, data)
        assert (changed != key) == (k not in feature_cache.NOT_DECODING), k


def test_the_split_key_follows_the_prepared_files_and_the_code_version(tiny_config, tmp_path, monkeypatch):
    import dataclasses
    cfg = tiny_config()
    data = pipeline.load(cfg.data, seed=0)
    copy = tmp_path / "prepared"  # the dataset as prepared, at a data dir of its own
    copy.mkdir()
    (copy / "dataset_info.json").write_text('{"version": "1.0.0", "splits": [{"shardLengths": ["100"]}]}')
    source, name = data.train.key
    split = dataclasses.replace(data.train, key=((*source[:2], str(copy), *source[3:]), name))

    def key():
        return feature_cache.split_key(cfg.data.to_dict(), "train", split, data)
    before = key()
    (copy / "dataset_info.json").write_text('{"version": "1.0.0", "splits": [{"shardLengths": ["101"]}]}')
    assert key() != before  # prepared again with other content
    changed = key()
    monkeypatch.setattr(feature_cache, "CODE_VERSION", feature_cache.CODE_VERSION + 1)
    assert key() != changed


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


# ---------------------------------------------------------------------------------------------- size cap, lock

def _counting_fill(calls):
    def fill(out):
        calls.append(out.shape)
        out[:] = len(calls)
    return fill


def _bins(directory) -> dict[str, int]:
    return {p.stem: p.stat().st_size for p in directory.glob("*.bin")}


def test_the_cap_holds_least_recently_used_entries_go_first_and_an_entry_over_it_is_not_kept(tmp_path):
    import time
    d, calls = tmp_path / "feature_cache", []
    fill, cap_gb, shape = _counting_fill(calls), 10_000 / 1e9, (256, 4)  # entries of 4096 bytes, a cap of 10 kB
    store = feature_cache.Store(disk_entry_mb=0)  # every entry on disk
    for key in ("a", "b"):
        assert store.get(key, shape, np.float32, fill, d, cap_gb)[1] == "computed"
        time.sleep(0.01)
    assert feature_cache.Store(disk_entry_mb=0).get("a", shape, np.float32, fill, d, cap_gb)[1] == "disk"  # a use
    time.sleep(0.01)
    assert store.get("c", shape, np.float32, fill, d, cap_gb)[1] == "computed"
    assert set(_bins(d)) == {"a", "c"} and not (d / "b.json").exists()  # b, the least recently used, evicted
    time.sleep(0.01)
    assert store.get("b", shape, np.float32, fill, d, cap_gb)[1] == "computed" and len(calls) == 4
    assert set(_bins(d)) == {"b", "c"}  # now a was the least recently used
    assert sum(_bins(d).values()) <= 10_000
    big, where = store.get("big", (1000, 4), np.float32, fill, d, cap_gb)  # 16 kB: over the cap, not kept
    assert where == "computed" and not isinstance(big, np.memmap) and (big == 5).all()
    assert set(_bins(d)) == {"b", "c"} and not [p for p in d.iterdir() if ".tmp-" in p.name]
    assert "exceed train.feature_cache_max_gb=1e-05" in feature_cache.too_large(
        16_000, cap_gb, feature_cache.usage(d), d)
    u = feature_cache.usage(d)  # automatic: the smaller of 50 GB and 25% of the free space
    assert feature_cache.cap_bytes(0, u) == min(50e9, 0.25 * (u.free + u.total))


def test_an_over_the_cap_run_takes_the_input_path_and_says_why_in_one_line(tiny_config, source, tmp_path,
                                                                            monkeypatch, caplog):
    from tl_research import config as C
    monkeypatch.setattr(feature_cache, "DISK_ENTRY_MB", 0)  # the tiny run's entries go to disk
    over = {"init": source, "frozen_depth": 2, "train.steps": 4}
    roomy = trainer.run(tiny_config(**over, **{"train.feature_cache_max_gb": 1.0}), tmp_path / "w" / "roomy",
                        progress=False, cache=trainer.StepCache())
    assert roomy.metrics["feature_path"] == "cached@2" and len(_bins(tmp_path / "w" / "feature_cache")) == 3
    with caplog.at_level("WARNING", logger="tl_research.run.feature_cache"):
        r = trainer.run(tiny_config(**over, **{"train.feature_cache_max_gb": 1e-9}), tmp_path / "small" / "run",
                        progress=False, cache=trainer.StepCache())
    assert r.status == "done" and r.metrics["feature_path"] == "input"
    start = next(x for x in read_metrics(tmp_path / "small" / "run" / "metrics.jsonl") if x.get("event") == "start")
    why = start["feature_path_reason"]
    assert why.startswith("activations of ") and why.endswith("GB exceed train.feature_cache_max_gb=1e-09"), why
    assert r.metrics["feature_path_reason"] == why and "feature_path_reason" not in roomy.metrics  # result.json
    assert "\n" not in why and [m for m in caplog.messages if "exceed" in m] == [f"feature cache: {why}; training "
                                                                                "from the images"]
    assert not (tmp_path / "small" / "feature_cache").exists() or not _bins(tmp_path / "small" / "feature_cache")
    assert r.metrics["test_accuracy"] == pytest.approx(roomy.metrics["test_accuracy"])
    # results-neutral: the key changes no config's identity (no source model retrained, no workdir refused)
    assert C.config_hash(tiny_config(**{"train.feature_cache_max_gb": 5.0})) == C.config_hash(tiny_config())
    with pytest.raises(ConfigError, match="train.feature_cache_max_gb"):
        feature_cache.check(types.SimpleNamespace(train={"feature_cache_max_gb": -1.0}))


def _jpegs(root, seed: int, mtime: float, levels=(60, 190)) -> None:
    import os
    from PIL import Image
    rng = np.random.default_rng(seed)
    for cls, level in zip(("cat", "dog"), levels):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            pixels = np.clip(rng.normal(level, 50, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / ".new.jpg", quality=90)
            os.utime(root / cls / ".new.jpg", (mtime, mtime))
            os.replace(root / cls / ".new.jpg", root / cls / f"img{i}.jpg")  # as rsync and editors replace a file


def test_replacing_the_photos_of_a_folder_computes_the_cache_anew(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_cache, "DISK_ENTRY_MB", 0)  # on disk, as a later launch finds them
    photos = tmp_path / "photos"
    over = {"data.name": f"folder:{photos}", "data.data_dir": str(tmp_path / "tfds"), "data.classes": (),
            "data.image_size": 8, "data.batch_size": 8, "data.eval_batch_size": 16, "frozen_depth": 2,
            "train.steps": 4, "train.log_every": 1}

    def run(path, **kw):  # a launch of its own: a new StepCache
        r = trainer.run(tiny_config(**over, **kw), path, progress=False, cache=trainer.StepCache())
        assert r.status == "done" and r.metrics["feature_path"] == ("input" if kw else "cached@2"), r.reason
        return r

    _jpegs(photos, seed=0, mtime=1.7e9)
    old = run(tmp_path / "w" / "old")
    _jpegs(photos, seed=1, mtime=1.7e9 + 100, levels=(190, 60))  # the same file names, other pixels
    new = run(tmp_path / "w" / "new")
    fresh = run(tmp_path / "fresh", **{"train.feature_cache": False})
    np.testing.assert_allclose(_losses(tmp_path / "w" / "new"), _losses(tmp_path / "fresh"), rtol=0, atol=1e-5)
    assert np.abs(np.subtract(_losses(tmp_path / "w" / "new"), _losses(tmp_path / "w" / "old"))).max() > 1e-3
    assert new.metrics["test_loss"] == pytest.approx(fresh.metrics["test_loss"], abs=1e-5)
    assert old.metrics["test_loss"] != pytest.approx(fresh.metrics["test_loss"], abs=1e-5)
    assert len(_bins(tmp_path / "w" / "feature_cache")) == 6  # three entries each: nothing reused


FILL_ONCE = """
import pathlib, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
from tl_research.run import feature_cache
d, me = pathlib.Path(sys.argv[1]), sys.argv[2]
(d.parent / f"ready-{me}").touch()
while len(list(d.parent.glob("ready-*"))) < 2:  # both processes start filling together
    time.sleep(0.01)
def fill(out):
    with open(d.parent / "fills", "a") as f:
        f.write(me + "\\n")
    time.sleep(1.0)
    out[:] = 7
acts, where = feature_cache.Store(disk_entry_mb=0).get("k", (64, 4), np.float32, fill, d)
assert (np.asarray(acts) == 7).all()
print(where)
"""


def test_two_processes_filling_one_entry_compute_and_write_it_once(tmp_path):
    import pathlib
    import subprocess
    import sys
    root = str(pathlib.Path(__file__).resolve().parents[1])
    d = tmp_path / "workdir" / "feature_cache"
    d.parent.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", FILL_ONCE, str(d), str(i), root], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert sorted(out.split()[-1] for out, _ in outs) == ["computed", "disk"]  # one waited, then read it
    assert len((d.parent / "fills").read_text().split()) == 1
    assert (d.parent / ".locks" / "feature-k.lock").exists() and set(_bins(d)) == {"k"}
