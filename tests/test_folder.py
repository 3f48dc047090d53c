import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tl_research.data import folder, pipeline
from tl_research.errors import ConfigError


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
