"""Real TFDS segmentation and detection datasets through the pipeline: the builders' own metadata (features,
class names) under tfds.testing.mock_data, with records of known content in their layout, so the mapping of
trimaps, the boxes' resize and crop and the padding can be checked by hand."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tl_research import tasks
from tl_research.data import pipeline, targets
from tl_research.tasks.segmentation import targets as segmentation_targets


class _Records:
    """A data source of `n` records made by `make(k)` (what `as_data_source` returns for one split)."""

    def __init__(self, n, make):
        self.n, self.make = n, make

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        return self.make(int(k))

    def __getitems__(self, keys):
        return [self.make(int(k)) for k in keys]


def _pet(k):
    """A landscape photo whose top 40% is a bright pet (trimap 1), then a 3-row border (3, as bright: the
    outline), then dark background (2)."""
    h, w = 30 + k, 40
    pet = np.arange(h) < int(0.4 * h)
    border = (np.arange(h) >= int(0.4 * h)) & (np.arange(h) < int(0.4 * h) + 3)
    trimap = np.where(pet, 1, np.where(border, 3, 2)).astype(np.uint8)
    image = np.where((pet | border)[:, None, None], 250, 10).astype(np.uint8) * np.ones((h, w, 3), np.uint8)
    return {"image": image, "segmentation_mask": np.repeat(trimap[:, None, None], w, 1), "label": k % 37,
            "species": k % 2, "file_name": f"{k}.jpg", "head_bbox": np.zeros(4, np.float32)}


def _voc(k):
    """A 40x80 image with three boxes; fitted to 20x20 (shorter side 40 -> 20, centre crop of x in 10..30 of
    the 40-wide resize) x maps to 2x - 0.5, y is unchanged."""
    boxes = [np.array(b, np.float32) for b in ([0.1, 0.25, 0.5, 0.75], [0.2, 0.0, 0.6, 0.2], [0.0, 0.0, 1.0, 1.0])]
    return {"image": np.full((40, 80, 3), k, np.uint8), "image/filename": f"{k}.jpg",
            "labels": [k % 20, 3, 7], "labels_no_difficult": [k % 20, 3, 7],
            "objects": {"bbox": boxes, "label": [k % 20, 3, 7], "is_difficult": [False] * 3,
                        "is_truncated": [False] * 3, "pose": [0, 0, 0]}}


def _mock(tmp_path, make, sizes):
    def as_data_source(self, split, decoders=None, **kwargs):
        return _Records(sizes[split], make)
    return tfds.testing.mock_data(as_data_source_fn=as_data_source, data_dir=str(tmp_path))


def _config(tmp_path, **kw):
    cfg = pipeline.default_config()
    cfg.data_dir, cfg.image_size, cfg.cache_mb = str(tmp_path), 20, 0
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_oxford_iiit_pet_trimaps_become_pet_background_and_ignored_border(tmp_path):
    with _mock(tmp_path, _pet, {"train": 6, "test": 3, "train[:4]": 4, "train[4:]": 2}):
        # the task's target spec handed to the pipeline (data.targets left at its default)
        data = pipeline.load(_config(tmp_path, name="oxford_iiit_pet", train_split="train[:4]",
                                     val_split="train[4:]"), targets=segmentation_targets.TARGETS)
        assert data.num_classes == 2 and data.class_names == ["background", "pet"]
        assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 3)
        batch = next(pipeline.train_batches(data, 4, seed=0, start_step=0, num_steps=1))
        masks, images = batch["segmentation_mask"], batch["image"]
        assert masks.shape == (4, 20, 20) and masks.dtype == np.uint8 and images.shape == (4, 20, 20, 3)
        assert (masks[:, 0] == 1).all() and (masks[:, -1] == 0).all()  # pet on top, background below
        assert set(np.unique(masks)) == {0, 1, targets.IGNORE}  # the border is ignored
        # aligned with the photo (up to the bilinear blur of the image's one edge row)
        assert images[masks == 1].min() > 200 and images[masks == 0].mean() < 30
        last = list(pipeline.eval_batches(data, data.test, 2))[-1]
        assert last["mask"].tolist() == [True, False] and (last["segmentation_mask"][1] == targets.IGNORE).all()


def test_voc_boxes_follow_the_resize_and_centre_crop(tmp_path):
    assert targets.get("detection") is tasks.get("detection").target_spec  # data.targets finds the task's
    with _mock(tmp_path, _voc, {"train": 5, "validation": 2, "test": 3}):
        data = pipeline.load(_config(tmp_path, name="voc", targets="detection", val_split="validation",
                                     max_boxes=4))
        assert data.num_classes == 20 and data.class_names[0] == "aeroplane"
        (batch,) = list(pipeline.eval_batches(data, data.test, 3))
        for k in range(3):
            assert batch["classes"][k].tolist() == [k, 7, -1, -1]  # the box left of the crop is dropped
            np.testing.assert_allclose(batch["boxes"][k], [[0.1, 0.0, 0.5, 1.0], [0, 0, 1, 1], [0] * 4, [0] * 4],
                                       atol=1e-6)
            assert (batch["image"][k] == k).all()
        # more objects than max_boxes: the largest are kept, in record order
        two = pipeline.load(_config(tmp_path, name="voc", targets="detection", val_split="validation",
                                    max_boxes=1))
        batch = next(pipeline.train_batches(two, 2, seed=0, start_step=0, num_steps=1))
        assert batch["classes"].shape == (2, 1) and (batch["classes"][:, 0] == 7).all()
