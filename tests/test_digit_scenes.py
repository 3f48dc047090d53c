"""The segmentation / detection scenes: masks are the digits' strokes, boxes enclose them, the builders are
deterministic, their splits draw disjoint digits, and the readers' batches keep targets with their images."""
import pathlib

import numpy as np
import pytest
from PIL import Image

from tl_research.data import builtin, digit_scenes, pipeline, registry, scenes, targets
from tl_research.core.errors import ConfigError

SMALL = {"train": 12, "val": 5, "test": 5}


def _expected_mask(scene, digits, size):
    """The mask painted independently: each digit scaled bilinearly at its frame, strokes >= 128, in order."""
    mask = np.zeros((size, size), np.uint8)
    for (top, left, side), d in zip(scene.frames, scene.digit_ids):
        scaled = np.asarray(Image.fromarray(digits[d][..., 0]).resize((side, side), Image.BILINEAR))
        mask[top:top + side, left:left + side][scaled >= 128] = builtin.mnist_arrays()[1][d] + 1
    return mask


@pytest.mark.parametrize("spec", [digit_scenes.MnistSegmentation.SPEC, digit_scenes.MnistDetection.SPEC])
def test_masks_are_the_digit_strokes_and_boxes_enclose_them(spec):
    digits, labels = builtin.mnist_arrays()
    pool = np.arange(0, 5000, 7)
    counts = []
    for index in range(40):
        scene = scenes.compose(spec, digits, labels, pool, 3, index)
        counts.append(len(scene.labels))
        assert scene.image.shape == (spec.size, spec.size, 3) and scene.image.dtype == np.uint8
        np.testing.assert_array_equal(scene.mask, _expected_mask(scene, digits, spec.size))
        assert set(scene.digit_ids) <= set(pool) and (scene.labels == labels[scene.digit_ids]).all()
        for k, ((top, left, side), box) in enumerate(zip(scene.frames, scene.boxes)):
            assert 0 <= box[0] < box[2] <= spec.size and 0 <= box[1] < box[3] <= spec.size
            assert top <= box[0] and box[2] <= top + side and side in spec.sides
            # the box is the tight box of this digit's strokes (the mask keeps the ones no later digit covers)
            own = np.zeros_like(scene.mask, bool)
            scaled = scenes.scale_digit(digits[scene.digit_ids[k]], side)
            own[top:top + side, left:left + side] = scaled >= scenes.STROKE_THRESHOLD
            rows, cols = np.flatnonzero(own.any(1)), np.flatnonzero(own.any(0))
            assert box.tolist() == [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
            for other in scene.boxes[:k]:
                assert scenes.overlap(box, other) <= scenes.MAX_OVERLAP
        assert set(np.unique(scene.mask)) <= {0, *(scene.labels + 1)}
    assert set(counts) == set(range(spec.min_digits, spec.max_digits + 1))


def _prepare(name, data_dir):
    b = registry.BUILDERS[name](data_dir=str(data_dir), file_format="array_record")
    b.download_and_prepare()
    return b


def _records(b, split):
    src = b.as_data_source(split)
    return src.__getitems__(list(range(len(src))))


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(digit_scenes._DigitScenes, "SPLIT_SIZES", SMALL)


def test_builders_are_deterministic_with_disjoint_digit_splits_and_a_shifted_look(tmp_path, small):
    a, b = _prepare("mnist_detection", tmp_path / "a"), _prepare("mnist_detection", tmp_path / "b")
    files = sorted(pathlib.Path(a.data_dir).glob("*.array_record*"))
    assert len(files) == 3
    for f in files:
        assert f.read_bytes() == (pathlib.Path(b.data_dir) / f.name).read_bytes()
    assert a.info.features["objects"]["label"].num_classes == 10
    digits, labels = builtin.mnist_arrays()
    pools = builtin.stratified_split(labels, builtin.MnistSubset.SPLITS)
    shifted = _prepare("mnist_detection_shifted", tmp_path / "a")
    used = {}
    for split, n in SMALL.items():
        records, other = _records(a, split), _records(shifted, split)
        assert len(records) == n
        used[split] = {int(i) for r in records for i in r["objects"]["digit_id"]}
        assert used[split] <= set(pools[split].tolist())
        for r, s in zip(records, other):
            ids, classes = np.asarray(r["objects"]["digit_id"]), np.asarray(r["objects"]["label"])
            assert 1 <= len(ids) <= 5 and (classes == labels[ids]).all()
            box = np.asarray(r["objects"]["bbox"]).reshape(-1, 4)
            assert ((0 <= box) & (box <= 1)).all() and (box[:, 2:] > box[:, :2]).all()
            mask = r["segmentation_mask"][..., 0]
            assert mask.shape == (96, 96) and set(np.unique(mask)) == {0, *(classes + 1)}
            for (y0, x0, y1, x1), c in zip(np.round(box * 96).astype(int), classes):
                assert (mask[y0:y1, x0:x1] == c + 1).any()  # each box holds strokes of its digit
            # the shifted domain: the same scene (digits, masks, boxes), another look
            assert s["objects"]["digit_id"] == r["objects"]["digit_id"]
            np.testing.assert_array_equal(s["segmentation_mask"], r["segmentation_mask"])
            assert np.abs(s["image"].astype(int) - r["image"].astype(int)).mean() > 30
    assert not (used["train"] & used["val"] or used["train"] & used["test"] or used["val"] & used["test"])


def _config(data_dir, name, **kw):
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir = name, str(data_dir)
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_readers_yield_targets_aligned_with_their_images(tmp_path, small):
    for name in ("mnist_segmentation", "mnist_detection"):
        _prepare(name, tmp_path)
    for cache_mb in (0, 64):  # decoded per batch, and from the in-memory cache
        seg = pipeline.load(_config(tmp_path, "mnist_segmentation", targets="segmentation", cache_mb=cache_mb))
        assert seg.num_classes == 11 and seg.class_names == list(targets.DIGIT_MASK.names)
        det = pipeline.load(_config(tmp_path, "mnist_detection", targets="detection", cache_mb=cache_mb,
                                    max_boxes=4))
        assert det.num_classes == 10 and det.image_shape == (96, 96, 3)
        batch = next(pipeline.train_batches(seg, 6, seed=1, start_step=1, num_steps=2))
        assert sorted(batch) == ["image", "segmentation_mask"] and batch["segmentation_mask"].shape == (6, 64, 64)
        positions = pipeline.EpochSampler(len(seg.train), 1)(np.arange(6, 12))
        records = seg.train.source.__getitems__([int(i) for i in seg.train.indices[positions]])
        for k, r in enumerate(records):
            np.testing.assert_array_equal(batch["image"][k], r["image"])
            np.testing.assert_array_equal(batch["segmentation_mask"][k], r["segmentation_mask"][..., 0])

        batches = list(pipeline.eval_batches(det, det.test, 4))
        assert [b["mask"].sum() for b in batches] == [4, 1]
        for k, r in enumerate(det.test.source.__getitems__(list(range(5)))):
            b, row = batches[k // 4], k % 4
            box, cls = np.asarray(r["objects"]["bbox"]).reshape(-1, 4), np.asarray(r["objects"]["label"])
            if len(cls) > 4:  # max_boxes keeps the 4 largest, in record order
                area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
                keep = np.sort(np.argsort(-area, kind="stable")[:4])
                box, cls = box[keep], cls[keep]
            np.testing.assert_array_equal(b["image"][row], r["image"])
            np.testing.assert_allclose(b["boxes"][row, :len(cls)], box)
            assert b["classes"][row].tolist() == [*cls.tolist(), *[-1] * (4 - len(cls))]
            assert (b["boxes"][row, len(cls):] == 0).all()
        assert (batches[1]["classes"][1:] == -1).all() and batches[1]["boxes"].dtype == np.float32
        padded = list(pipeline.eval_batches(seg, seg.val, 4))[-1]
        assert (padded["segmentation_mask"][1:] == targets.IGNORE).all() and padded["mask"].tolist() == [1, 0, 0, 0]
    sub = pipeline.load(_config(tmp_path, "mnist_detection", targets="detection", train_examples=5), seed=3)
    assert len(sub.train) == 5 and set(sub.train.indices) < set(range(12))

    with pytest.raises(ConfigError, match=r"data\.targets='masks'"):
        pipeline.load(_config(tmp_path, "mnist_segmentation", targets="masks"))
    with pytest.raises(ConfigError, match=r"data\.classes=\(1, 2\)"):
        pipeline.load(_config(tmp_path, "mnist_segmentation", targets="segmentation", classes=(1, 2)))
    with pytest.raises(ConfigError, match=r"data\.label_key='label'.*data\.targets"):
        pipeline.load(_config(tmp_path, "mnist_detection"))
    with pytest.raises(ConfigError, match=r"data\.objects_key='boxes'.*objects"):
        pipeline.load(_config(tmp_path, "mnist_detection", targets="detection", objects_key="boxes"))
