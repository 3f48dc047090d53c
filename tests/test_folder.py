import collections
import os
import pathlib
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tl_research.data import folder, pipeline
from tl_research.core.errors import ConfigError


def _photos(root: pathlib.Path, counts: dict[str, int], seed=0) -> pathlib.Path:
    rng = np.random.default_rng(seed)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            size = (int(rng.integers(20, 70)), int(rng.integers(20, 70)))
            image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
            image.save(root / cls / f"img{i:03d}.{'jpg' if i % 2 else 'png'}")
    return root


def _name(record) -> str:
    name = record["file_name"]
    return name.decode() if isinstance(name, bytes) else name


def test_a_folder_becomes_a_stratified_dataset_and_bad_images_are_skipped(tmp_path):
    root = _photos(tmp_path / "Tomato leaves", {"blight": 20, "healthy": 10, "mosaic": 10})
    (root / "blight" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "healthy" / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((300, 120, 3), np.uint8)).save(root / "mosaic" / "large.png")
    b = folder.builder(str(root), str(tmp_path / "data"), max_side=48)
    assert b.data_dir.startswith(str(tmp_path / "data" / "user_folder" / "tomato_leaves_"))
    assert b.info.features["label"].names == ["blight", "healthy", "mosaic"]
    assert [rel for rel, _ in folder.skipped(b)] == ["blight/broken.jpg"]
    assert (pathlib.Path(b.data_dir) / "skipped.txt").read_text().startswith("blight/broken.jpg\t")
    counts = {s: np.bincount([r["label"] for r in b.as_data_source(s)], minlength=3).tolist()
              for s in ("train", "val", "test")}
    assert counts == {"train": [14, 7, 8], "val": [3, 2, 2], "test": [3, 1, 1]}  # 70 / 15 / 15 per class
    # readable without this code (no TensorFlow): the prepared folder describes itself
    plain = tfds.builder_from_directory(b.data_dir)
    images = {_name(r): r["image"] for s in ("train", "val", "test") for r in plain.as_data_source(s)}
    assert len(images) == 41
    assert all(im.ndim == 3 and im.shape[2] == 3 and min(im.shape[:2]) <= 48 for im in images.values())
    assert images["mosaic/large.png"].shape == (120, 48, 3)  # 300x120, shorter side brought to 48
    # the same folder is reused; a changed folder is prepared anew
    assert folder.builder(str(root), str(tmp_path / "data"), max_side=48).data_dir == b.data_dir
    _photos(root, {"healthy": 11}, seed=1)
    assert folder.builder(str(root), str(tmp_path / "data"), max_side=48).data_dir != b.data_dir


def test_images_are_stored_as_they_look(tmp_path):
    root = _photos(tmp_path / "p", {"a": 2, "b": 2})
    rotated = Image.fromarray(np.tile(np.arange(40, dtype=np.uint8)[None, :, None] * 6, (20, 1, 3)))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated by 90 degrees
    rotated.save(root / "a" / "phone.jpg", exif=exif)
    grey = Image.fromarray(np.full((30, 30), 200, np.uint8))
    grey.save(root / "b" / "grey.png")
    b = folder.builder(str(root), str(tmp_path / "data"), fractions={"train": 1.0})
    by_name = {_name(r): r["image"] for r in b.as_data_source("train")}
    assert by_name["a/phone.jpg"].shape == (40, 20, 3)  # upright, as a viewer shows it
    assert by_name["b/grey.png"].shape == (30, 30, 3) and (by_name["b/grey.png"] == 200).all()
    small_jpeg = root / "a" / "img001.jpg"
    assert folder._encode(small_jpeg, 512) == small_jpeg.read_bytes()  # a plain JPEG keeps its bytes


def test_loads_through_the_pipeline_by_name(tmp_path):
    root = _photos(tmp_path / "photos", {"cat": 10, "dog": 10})
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir, cfg.image_size = f"folder:{root}", str(tmp_path / "data"), 16
    data = pipeline.load(cfg, seed=0)
    assert data.class_names == ["cat", "dog"] and data.image_shape == (16, 16, 3)
    assert (len(data.train), len(data.val), len(data.test)) == (14, 4, 2)


def test_empty_class_single_class_and_missing_folder_are_config_errors(tmp_path):
    root = _photos(tmp_path / "photos", {"cat": 3, "dog": 3})
    (root / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"data\.name.*empty"):
        folder.builder(str(root), str(tmp_path / "data"))
    (root / "empty" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"data\.name.*empty.*no readable image"):
        folder.builder(str(root), str(tmp_path / "data"))
    single = _photos(tmp_path / "single", {"cat": 3})
    with pytest.raises(ConfigError, match=r"data\.name.*1 class"):
        folder.builder(str(single), str(tmp_path / "data"))
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir = f"folder:{tmp_path / 'nowhere'}", str(tmp_path / "data")
    with pytest.raises(ConfigError, match=r"data\.name.*not a folder"):
        pipeline.builder(cfg)
    assert not (tmp_path / "data" / "user_folder").exists() or not any(
        (tmp_path / "data" / "user_folder").glob("*/*/dataset_info.json"))


def _age(root: pathlib.Path, seconds: float = 100.0) -> None:
    """Sets every directory's modification time into the past, as for a folder not touched for a while (the
    manifest does not trust a directory modified within 2 s of being listed)."""
    past = time.time() - seconds
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(d, (past, past))


def _records(b) -> dict:
    return {s: [(_name(r), int(r["label"]), r["image"].tobytes()) for r in b.as_data_source(s)]
            for s in b.info.splits}


def test_preparing_in_parallel_gives_the_same_dataset_byte_for_byte(tmp_path):
    root = _photos(tmp_path / "photos", {"a": 14, "b": 13})
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(np.full((200, 150, 3), 90, np.uint8)).save(root / "b" / "big.jpg")
    one = folder.builder(str(root), str(tmp_path / "one"), max_side=40, workers=1)
    two = folder.builder(str(root), str(tmp_path / "two"), max_side=40, workers=2)
    # compared within one process: TFDS serializes each record's fields (a protobuf map) in an order that
    # may differ from one process to the next, whatever the number of workers; the decoded examples do not
    files = sorted(p.name for p in pathlib.Path(one.data_dir).glob("*array_record*"))
    assert files and files == sorted(p.name for p in pathlib.Path(two.data_dir).glob("*array_record*"))
    for name in files:
        assert (pathlib.Path(one.data_dir) / name).read_bytes() == (pathlib.Path(two.data_dir) / name).read_bytes()
    assert _records(one) == _records(two) and folder.skipped(one) == folder.skipped(two)
    assert [rel for rel, _ in folder.skipped(two)] == ["a/broken.jpg"]
    assert not list((tmp_path / "two" / "user_folder").glob(".prepare_*"))  # the staged images are gone


def test_each_image_is_decoded_once_and_large_jpegs_at_a_reduced_scale(tmp_path, monkeypatch):
    root = _photos(tmp_path / "photos", {"a": 5, "b": 5})
    (root / "a" / "broken.png").write_bytes(b"garbage")
    Image.fromarray(np.full((400, 300, 3), 90, np.uint8)).save(root / "b" / "big.jpg")
    opened, decoded = collections.Counter(), {}
    real_open, real_transpose = Image.open, folder.ImageOps.exif_transpose

    def counting_open(fp, *args, **kwargs):
        opened[pathlib.Path(fp).relative_to(root).as_posix()] += 1
        return real_open(fp, *args, **kwargs)

    def recording_transpose(im, *args, **kwargs):  # sees the image as decoded
        decoded[pathlib.Path(im.filename).name] = im.size
        return real_transpose(im, *args, **kwargs)

    monkeypatch.setattr(folder.Image, "open", counting_open)
    monkeypatch.setattr(folder.ImageOps, "exif_transpose", recording_transpose)
    b = folder.builder(str(root), str(tmp_path / "data"), max_side=64, workers=1)  # in this process
    assert sum(len(b.as_data_source(s)) for s in b.info.splits) == 11
    assert set(opened) == {rel for rel, _ in folder.scan(str(root), "x")[1]} and set(opened.values()) == {1}
    assert decoded["big.jpg"] == (75, 100)  # JPEG draft: decoded at 1/4 scale (still >= 64), not 300x400


def test_a_launch_stats_only_the_directories_of_an_unchanged_folder(tmp_path, monkeypatch):
    root = _photos(tmp_path / "photos", {"a": 6, "b": 6})
    (root / "b" / "more").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "b" / "more" / "x.png")
    _age(root)
    data = str(tmp_path / "data")
    first = folder.builder(str(root), data, fractions={"train": 1.0}, workers=1)
    manifest = folder.manifest_path(root.resolve(), data)
    assert manifest.is_file() and str(tmp_path / "data" / "user_folder") in str(manifest)
    assert not list(root.rglob(".*"))  # nothing written into the user's folder
    calls = collections.Counter()
    real_stat, real_scandir = os.stat, os.scandir

    def counting(kind, real):
        def call(path, *args, **kwargs):
            if str(path).startswith(str(root)):
                calls[kind] += 1
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "stat", counting("stat", real_stat))
    monkeypatch.setattr(os, "scandir", counting("scandir", real_scandir))
    again = folder.builder(str(root), data, fractions={"train": 1.0}, workers=1)
    assert again.data_dir == first.data_dir
    assert calls == {"stat": 5}  # resolving the path, then root, a, b, b/more: no listing, no image stat'ed
    calls.clear()
    folder.builder(str(root), data, fractions={"train": 1.0}, workers=1, rescan=True)
    assert calls == {"scandir": 4, "stat": 5}  # a rescan lists every directory (and stats its images) again


def test_the_manifest_sees_an_added_a_removed_and_a_replaced_photo(tmp_path, monkeypatch):
    root = _photos(tmp_path / "photos", {"a": 4, "b": 4})
    data, seen = str(tmp_path / "data"), []

    def launch(**kwargs):
        b = folder.builder(str(root), data, fractions={"train": 1.0}, workers=1, **kwargs)
        seen.append(b.data_dir)
        return {_name(r): r["image"].tobytes() for r in b.as_data_source("train")}

    _age(root)
    before = launch()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "a" / "added.png")
    assert set(launch()) == set(before) | {"a/added.png"}  # a new directory time: a listed again
    (root / "b" / "img002.png").unlink()
    _age(root)
    assert set(launch()) == set(before) - {"b/img002.png"} | {"a/added.png"}
    tmp = root / "b" / ".img000.png.tmp"  # replaced as rsync and editors do: written aside, renamed over
    Image.fromarray(np.full((20, 20, 3), 7, np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, root / "b" / "img000.png")
    assert launch()["b/img000.png"] != before["b/img000.png"]
    _age(root)
    launch()
    # overwritten in place, same name: the directory's time does not change, so by design this is not
    # seen (the documented limit) until a rescan, the environment variable, or touching the directory
    Image.fromarray(np.full((30, 30, 3), 9, np.uint8)).save(root / "a" / "img000.png")
    stale = launch()
    assert stale["a/img000.png"] == before["a/img000.png"]
    fresh = launch(rescan=True)
    assert fresh["a/img000.png"] != before["a/img000.png"] and len(set(seen)) == 5
    _age(root)
    launch()
    Image.fromarray(np.full((30, 30, 3), 11, np.uint8)).save(root / "a" / "img000.png")
    monkeypatch.setenv(folder.RESCAN_ENV, "1")
    assert launch()["a/img000.png"] != fresh["a/img000.png"]
    monkeypatch.delenv(folder.RESCAN_ENV)
    _age(root)
    launch()
    Image.fromarray(np.full((30, 30, 3), 13, np.uint8)).save(root / "a" / "img000.png")
    os.utime(root / "a")  # touch the directory
    assert launch()["a/img000.png"] != fresh["a/img000.png"]


class _FullSizeSource:
    """A data source whose records are decoded 64x64 images (what TFDS returns for stored images)."""

    def __init__(self, n: int):
        self.n, self.calls = n, []

    def __len__(self):
        return self.n

    def __getitems__(self, keys):
        self.calls.append(len(keys))
        return [{"image": np.full((64, 64, 3), k % 251, np.uint8), "label": k % 2} for k in keys]


def test_cache_in_memory_stays_within_its_budget(tmp_path):
    n, limit_mb = 600, 0.15  # 600 x 8x8x3 = 115 KB cached; the split at its stored size: 7.4 MB
    split = lambda: pipeline.Split(_FullSizeSource(n), np.arange(n), np.arange(n) % 2)  # noqa: E731
    load_image = pipeline.make_image_loader("image", (8, 8, 3), "bilinear", 1.0)
    data = pipeline.Dataset("fake", split(), split(), split(), 2, ["x", "y"], (8, 8, 3), load_image)
    tracemalloc.start()
    try:
        pipeline.cache_in_memory(data, limit_mb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.train.images is not None and data.train.images.shape == (n, 8, 8, 3)
    expected, _ = pipeline._decode(data, _FullSizeSource(n).__getitems__(list(range(n))))
    assert (data.train.images == expected).all() and (data.test.images == expected).all()
    assert peak <= 3 * limit_mb * 2**20 * 1.2  # three splits of the budget each, and a little
    assert max(data.train.source.calls) * 64 * 64 * 3 <= limit_mb * 2**20 / 8  # chunks of ~1/16 of it


def test_a_script_without_a_main_guard_still_prepares_in_this_process(tmp_path):
    # spawned workers re-import a script's top level: without `if __name__ == "__main__":` they fail, and
    # the images are prepared in the parent instead of crashing (with a warning naming the fix)
    root = _photos(tmp_path / "photos", {"a": 3, "b": 3})
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(pathlib.Path(__file__).resolve().parents[1])!r})\n"
        "from tl_research.data import folder\n"
        f"b = folder.builder({str(root)!r}, {str(tmp_path / 'data')!r}, workers=2)\n"
        "print('EXAMPLES', sum(len(b.as_data_source(s)) for s in b.info.splits))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "EXAMPLES 6" in done.stdout and "preparing the images in this process instead" in done.stderr


def test_a_folder_past_the_writers_memory_buffer_prepares_without_tensorflow(tmp_path, monkeypatch):
    """TFDS spills a split past shuffle.MAX_MEM_BUFFER_SIZE (1,000 MB: about 33,000 500x375 JPEGs) into
    temporary files through tf.io.gfile; without TensorFlow they are local files (data/tfds_spill.py), with the
    same records in the same order as a split kept in memory."""
    from tensorflow_datasets.core import shuffle
    root = _photos(tmp_path / "photos", {"a": 12, "b": 12})
    kept = folder.builder(str(root), str(tmp_path / "memory"), max_side=40, workers=1)
    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 2_000)  # a few images: this split spills
    spilled = folder.builder(str(root), str(tmp_path / "spilled"), max_side=40, workers=1)
    assert _records(spilled) == _records(kept) and sum(len(v) for v in _records(spilled).values()) == 24
    assert shuffle.tf is not None and not isinstance(shuffle.tf, type)  # restored: TFDS's lazy module again
