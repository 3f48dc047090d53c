"""Decoding in worker processes (data.workers): the same batches whatever the worker count, for training,
evaluation and the feature cache's fill (a whole run's results and cache entries); workers that end with their
iterator; training batches put on the devices ahead of the step; JPEGs decoded at a reduced scale close to the
full decode."""
import gc
import io
import multiprocessing
import os

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tl_research.data import geometry, pipeline

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """A folder of JPEG photos (two classes of 10), prepared with data.cache_mb=0: every batch decodes its
    records (as EncodedImage: the reduced-scale path)."""
    root = tmp_path_factory.mktemp("photos")
    for c in range(2):
        (root / f"c{c}").mkdir()
        for i in range(10):
            photo = getattr(skimage.data, PHOTOS[(i + c) % 4])()
            Image.fromarray(photo).resize((160 + 8 * i, 120)).save(root / f"c{c}" / f"{i}.jpg", quality=90)
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir = f"folder:{root}", str(tmp_path_factory.mktemp("tfds"))
    cfg.cache_mb, cfg.image_size = 0, 24
    data = pipeline.load(cfg)
    assert data.train.images is None and len(data.train) >= 12 and len(data.val) >= 2
    return cfg, data


def _bytes(batches) -> list[bytes]:
    return [b"".join(np.ascontiguousarray(b[k]).tobytes() for k in sorted(b)) for b in batches]


def _train(data, workers, start=0, steps=8):
    it = pipeline.train_batches(data, 5, 3, start, steps, workers=workers)
    try:
        return _bytes(it)
    finally:
        it.close()


def test_train_batches_are_the_same_bytes_for_any_worker_count_and_on_resume(jpegs):
    _, data = jpegs
    assert isinstance(pipeline._fetch(data, data.train.source, [0])[0]["image"], pipeline.EncodedImage)
    threads = _train(data, 0)
    assert len(threads) == 8 and len(set(threads)) == 8
    assert _train(data, 1) == threads
    assert _train(data, 2) == threads
    assert _train(data, 2, start=3) == threads[3:]  # a resumed run reads what the uninterrupted one read


def test_eval_batches_are_the_same_bytes_with_worker_processes_and_from_the_cache(jpegs):
    cfg, data = jpegs
    split = data.train  # 14 examples in batches of 4: the last one padded
    expect = _bytes(pipeline.eval_batches(data, split, 4))
    it = pipeline.eval_batches(data, split, 4, workers=2)
    assert _bytes(it) == expect and len(expect) == 4
    it.close()
    cached = cfg.copy_and_resolve_references()
    cached.cache_mb = 64
    held = pipeline.load(cached)
    assert held.train.images is not None and pipeline.resolve_workers(-1, held.train) == 0
    assert _bytes(pipeline.eval_batches(held, held.train, 4)) == expect  # cached: decoded the same way


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_worker_processes_end_with_their_iterator(jpegs):
    _, data = jpegs
    auto = pipeline.AUTO_MIN_EXAMPLES
    assert pipeline.resolve_workers(-1, data.train, auto) == len(os.sched_getaffinity(0)) - 1  # 0 on one core
    assert pipeline.resolve_workers(-1, data.train) == 0  # 14 examples: no process started for them
    held = pipeline.Split(data.train.source, data.train.indices, data.train.labels, images=np.zeros((14, 1)))
    assert pipeline.resolve_workers(2, held) == 0 and pipeline.resolve_workers(-1, held, auto) == 0  # in memory
    before = set(multiprocessing.active_children())
    for how in ("close", "del"):
        it = pipeline.train_batches(data, 5, 0, 0, 1000, workers=2)
        next(it)
        workers = [p for p in multiprocessing.active_children() if p not in before]
        pids = [p.pid for p in workers]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids), how
        if how == "close":
            it.close()
        else:
            del it
            gc.collect()
        assert not [p for p in multiprocessing.active_children() if p not in before], how
        assert not any(_alive(pid) for pid in pids), how  # gone, not zombies


def test_large_jpegs_are_decoded_at_a_reduced_scale_close_to_the_full_decode():
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).resize((500, 375)).save(buf, "JPEG", quality=90)
        data = buf.getvalue()
        full_decode = lambda b: np.asarray(Image.open(io.BytesIO(b)))  # noqa: E731 - as TFDS decodes
        for size, crop, interpolation in ((32, 1.0, "bilinear"), (64, 0.875, "bicubic"), (40, 0.875, "bilinear")):
            load = pipeline.make_image_loader("image", (size, size, 3), interpolation, crop)
            win = geometry.window(375, 500, size, size, crop)
            assert 500 >= 4 * win.new_w and 375 >= 4 * win.new_h  # so it is drafted
            reduced = load({"image": pipeline.EncodedImage(data, full_decode)}).astype(int)
            full = load({"image": full_decode(data)}).astype(int)
            diff = np.abs(reduced - full)
            assert reduced.shape == (size, size, 3)
            assert diff.mean() <= 1.0 and diff.max() <= 8, (name, size, diff.mean(), diff.max())
        # not 4x the size the resize needs: decoded in full, exactly as the data source decodes
        load = pipeline.make_image_loader("image", (112, 112, 3), "bilinear", 1.0)
        seen = []
        exact = load({"image": pipeline.EncodedImage(data, lambda b: seen.append(b) or full_decode(b))})
        assert seen and np.array_equal(exact, load({"image": full_decode(data)}))


def test_training_batches_are_put_on_the_devices_two_ahead_in_order():
    import jax
    from tl_research.core import sharding
    from tl_research.run import loop
    read = []

    def host():
        for k in range(5):
            read.append(k)
            yield {"image": np.full((2, 3), k, np.uint8)}

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    it = loop.DevicePrefetch(host(), sharding.batch_sharding(mesh))
    first = next(it)
    assert isinstance(first["image"], jax.Array) and int(first["image"][0, 0]) == 0
    assert read == [0, 1]  # the step's batch and the next one, no more
    assert int(next(it)["image"][0, 0]) == 1 and read == [0, 1, 2]
    assert [int(b["image"][0, 0]) for b in it] == [2, 3, 4] and read == [0, 1, 2, 3, 4]


def _photo_folder(root, per_class: int = 20) -> None:
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            photo = getattr(skimage.data, PHOTOS[(i + c) % 4])()
            Image.fromarray(photo).resize((64 + 4 * i, 48)).save(root / f"c{c}" / f"{i}.jpg", quality=90)


@pytest.mark.long  # three runs over a streamed folder: about a minute (the batches themselves: the test above)
def test_a_run_on_a_streamed_split_is_the_same_with_0_1_and_2_workers(tmp_path, monkeypatch):
    """Training batches, evaluations (val, test: last batch padded) and the feature cache's fill (its entry on
    disk, last batch padded) of a run over a folder not held in memory, with data.workers 0, 1 and 2: the same
    results and entries, and every iterator over the streamed split in that many worker processes."""
    from conftest import tiny
    from tl_research.core.tracking import read_metrics
    from tl_research.run import feature_cache, trainer
    _photo_folder(tmp_path / "photos")
    monkeypatch.setattr(feature_cache, "DISK_ENTRY_MB", 0)  # entries on disk, compared byte for byte
    iterate, seen = pipeline._iterate, []

    def spy(ds, threads, prefetch, workers):
        seen.append(workers)
        return iterate(ds, threads, prefetch, workers)

    monkeypatch.setattr(pipeline, "_iterate", spy)
    over = {"data.name": f"folder:{tmp_path / 'photos'}", "data.data_dir": str(tmp_path / "tfds"),
            "data.classes": (), "data.image_size": 8, "data.cache_mb": 0, "data.batch_size": 8,
            "data.eval_batch_size": 5, "strategy.name": "two_phase", "strategy.boundary_steps": 4,
            "train.steps": 8, "train.log_every": 1}
    out, cache = {}, trainer.StepCache()  # the runs share compiled steps: what differs is where batches come from
    for workers in (0, 1, 2, "images"):  # images: workers 0 and no feature cache (the fill's reference)
        seen.clear()
        kw = {"train.feature_cache": False} if workers == "images" else {"data.workers": workers}
        run_dir = tmp_path / str(workers) / "run"
        r = trainer.run(tiny(str(tmp_path / "tfds"), **over, **kw), run_dir, progress=False, cache=cache)
        assert r.status == "done", r.reason
        losses = [x["train_loss"] for x in read_metrics(run_dir / "metrics.jsonl") if "train_loss" in x]
        entries = {p.name: p.read_bytes() for p in (run_dir.parent / "feature_cache").glob("*.bin")}
        out[workers] = ({k: v for k, v in r.metrics.items() if k != "wall_time"}, losses, entries)
        if workers in (1, 2):  # the fill, phase 2's batches, val and test evaluations: in worker processes;
            assert seen.count(workers) >= 4 and set(seen) == {0, workers}, seen  # phase 1 reads the cache
    metrics, losses, entries = out[0]
    assert metrics["feature_path"] == "cached@3,input" and len(losses) == 8 and len(entries) == 1
    data = pipeline.load(tiny(str(tmp_path / "tfds"), **over).data)
    assert len(data.train) % 5 and len(data.val) % 5 and len(data.val) > 5  # last batches padded
    for workers in (1, 2):
        assert out[workers] == out[0], workers
    images_metrics, images_losses, _ = out["images"]
    np.testing.assert_allclose(losses, images_losses, rtol=0, atol=1e-5)  # the entry holds the right rows
    assert metrics["val_accuracy"] == images_metrics["val_accuracy"]
    # why a phase trains from the images, in result.json (results.csv's row) as in the start row
    assert metrics["feature_path_reason"] == "frozen_depth 0: no frozen prefix to cache"
    assert images_metrics["feature_path_reason"] == "train.feature_cache is off"
