import contextlib
import pathlib
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tl_research.data import vtab
from tl_research.core.errors import ConfigError


def test_registry_holds_the_19_tasks_in_their_groups():
    tasks = vtab.VTAB_TASKS
    assert len(tasks) == 19
    groups = {g: sorted(n for n, t in tasks.items() if t.group == g) for g in vtab.GROUPS}
    assert [len(groups[g]) for g in vtab.GROUPS] == [7, 4, 8]
    assert "sun397" in groups["natural"] and "eurosat" in groups["specialized"]
    assert "smallnorb_elevation" in groups["structured"]
    with pytest.raises(ConfigError, match=r"data\.name.*cifar100"):
        vtab.get("cifar1000")


def test_protocol_split_arithmetic():
    cifar = vtab.get("cifar100").splits({"train": 50000, "test": 10000})
    assert cifar == {"train": "train[:45000]", "val": "train[45000:50000]", "test": "test[:10000]",
                     "trainval": "train[:50000]", "train800": "train[:800]", "val200": "train[45000:45200]",
                     "train800val200": "train[:800]+train[45000:45200]"}
    dtd = vtab.get("dtd").splits({"train": 1880, "validation": 1880, "test": 1880})
    assert dtd["val200"] == "validation[:200]" and dtd["trainval"] == "train[:1880]+validation[:1880]"
    # percentages are cut as the benchmark does, pct * n // 100
    euro = vtab.get("eurosat").splits({"train": 27001})
    assert (euro["train"], euro["val"], euro["test"]) == ("train[:16200]", "train[16200:21600]",
                                                          "train[21600:27001]")
    norb = vtab.get("smallnorb_azimuth").splits({"train": 24300, "test": 24300})
    assert norb["val200"] == "test[:200]" and norb["test"] == "test[12150:24300]"
    for split in cifar.values():  # every string is one TFDS understands
        tfds.core.ReadInstruction.from_spec(split)
    with pytest.raises(ValueError):
        vtab.get("cifar100").splits({"train": 900, "test": 100})  # val would hold only 90


def test_derived_labels_on_hand_made_records():
    count = vtab.get("clevr_count")
    assert count.label({"objects": {"size": np.zeros(3)}}) == 0
    assert count.label({"objects": {"size": np.zeros(10)}}) == 7
    dist = vtab.get("clevr_distance")
    coords = np.array([[0.0, 0.0, 9.2], [0.0, 0.0, 12.0]])
    assert dist.label({"objects": {"pixel_coords": coords}}) == 3  # closest at 9.2: in (9.0, 9.5]
    kitti = vtab.get("kitti_distance")
    rec = {"objects": {"type": np.array([0, 5, 2]), "location": np.array([[0, 0, 30.0], [0, 0, 3.0],
                                                                         [0, 0, 15.0]])}}
    assert kitti.label(rec) == 1  # nearest vehicle (type < 3) at 15 m; the pedestrian at 3 m does not count
    assert kitti.label({"objects": {"type": np.array([5]), "location": np.array([[0, 0, 3.0]])}}) == 3
    loc = vtab.get("dsprites_location")
    assert [loc.label({"label_x_position": v}) for v in (0, 1, 2, 31)] == [0, 0, 1, 15]
    ori = vtab.get("dsprites_orientation")
    assert [ori.label({"label_orientation": v}) for v in (0, 2, 3, 39)] == [0, 0, 1, 15]


# The number of examples of each TFDS split of the builders the tasks use (the TFDS catalog's split sizes).
SPLIT_SIZES = {
    "caltech101": {"train": 3060, "test": 6084},
    "cifar100": {"train": 50000, "test": 10000},
    "dtd": {"train": 1880, "validation": 1880, "test": 1880},
    "oxford_flowers102": {"train": 1020, "validation": 1020, "test": 6149},
    "oxford_iiit_pet": {"train": 3680, "test": 3669},
    "sun397/tfds": {"train": 76128, "validation": 10875, "test": 21750},
    "svhn_cropped": {"train": 73257, "test": 26032, "extra": 531131},
    "patch_camelyon": {"train": 262144, "validation": 32768, "test": 32768},
    "eurosat/rgb": {"train": 27000},
    "resisc45": {"train": 31500},
    "diabetic_retinopathy_detection/btgraham-300": {"train": 35126, "validation": 10906, "test": 42670},
    "clevr": {"train": 70000, "validation": 15000, "test": 15000},
    "dmlab": {"train": 65550, "validation": 22628, "test": 22735},
    "dsprites": {"train": 737280},
    "kitti": {"train": 6347, "validation": 423, "test": 711},
    "smallnorb": {"train": 24300, "test": 24300},
}


def _write_split_metadata(tmp_path):
    """Under mock_data: each builder's dataset_info.json with its real split sizes, so that the mocked builders
    carry split metadata (mock_data then reads it, as TFDS reads a prepared dataset's)."""
    for tfds_name, sizes in SPLIT_SIZES.items():
        b = tfds.builder(tfds_name, data_dir=str(tmp_path))
        b.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(name=n, shard_lengths=[c], num_bytes=0)
                                               for n, c in sizes.items()]))
        pathlib.Path(b.data_dir).mkdir(parents=True, exist_ok=True)
        b.info.write_to_directory(b.data_dir)


def _records(info, split: str) -> list[tuple[str, int, int]]:
    """[(TFDS split, first record, stop)] a split string reads, as TFDS itself resolves it."""
    out = []
    for part in split.split("+"):
        (fi,) = info.splits[part].file_instructions  # one shard per split in the metadata written above
        out.append((part.split("[")[0], fi.skip, fi.skip + fi.take))
    return out


def test_registry_matches_the_tfds_builders(tmp_path):
    """Every task's TFDS builder (mock data with real split metadata, no download) has the label field, the
    registered classes and the splits the task cuts, and the pipeline resolves the task's own and the VTAB-1k
    protocol's splits from that metadata to the records the benchmark uses."""
    from tl_research.data import pipeline
    with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path)):
        _write_split_metadata(tmp_path)
        for task in vtab.VTAB_TASKS.values():
            b = tfds.builder(task.tfds_name, data_dir=str(tmp_path))
            features = b.info.features
            assert task.image_key in features and task.label_key in features, task.name
            if task.label_fn is None:
                assert features[task.label_key].num_classes == task.num_classes, task.name
            elif isinstance(features[task.label_key], tfds.features.ClassLabel):  # binned dSprites
                top = features[task.label_key].num_classes - 1
                assert task.label({task.label_key: top}) == task.num_classes - 1, task.name
            sizes = SPLIT_SIZES[task.tfds_name]
            assert {n: b.info.splits[n].num_examples for n in b.info.splits.keys()} == sizes, task.name
            assert set(task.base_splits()) <= set(sizes), task.name

            # the task's own splits, cut by TFDS from the percentages (the benchmark's pct * n // 100 agrees
            # with TFDS's rounding for these sizes)
            own = {k: _records(b.info, getattr(task, k)) for k in ("train", "val", "test")}
            resolved = {}
            for train, val, test in (("train", "val", "test"), ("train800", "val200", "test"),
                                     ("train800val200", "val200", "trainval")):
                cfg = _vtab_config(tmp_path, task.name, train_split=train, val_split=val, test_split=test)
                strings = pipeline.split_strings(cfg, b)
                resolved.update({train: strings["data.train_split"], val: strings["data.val_split"],
                                 test: strings["data.test_split"]})
            records = {k: _records(b.info, v) for k, v in resolved.items()}
            assert {k: records[k] for k in own} == own, task.name
            assert records["trainval"] in ([*own["train"], *own["val"]],  # one range where val follows train
                                           [(own["train"][0][0], own["train"][0][1], own["val"][0][2])]), task.name
            (tn, ta, tb), (vn, va, vb) = own["train"][0], own["val"][0]
            assert records["train800"] == [(tn, ta, ta + 800)], task.name  # the first 800 of train
            assert records["val200"] == [(vn, va, va + 200)], task.name  # the first 200 of val
            assert records["train800val200"] == records["train800"] + records["val200"], task.name
            sizes_of = {k: b.info.splits[v].num_examples for k, v in resolved.items()}
            assert (sizes_of["train800"], sizes_of["val200"], sizes_of["train800val200"]) == (800, 200, 1000)
            # tuning never sees the test records, nor the final run's training the val200 ones twice
            for a, b_ in (("train800", "val200"), ("train800val200", "test"), ("val200", "test")):
                for (n1, s1, e1) in records[a]:
                    for (n2, s2, e2) in records[b_]:
                        assert n1 != n2 or e1 <= s2 or e2 <= s1, (task.name, a, b_)
            if task.label_fn is not None:  # the label function reads the fields the records have
                for record in b.as_data_source(split="train"):
                    if all(len(v) for v in record.get("objects", {"": [0]}).values()):
                        assert isinstance(task.label(record), int), task.name


def _vtab_config(tmp_path, task, **kw):
    from tl_research.data import pipeline
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir, cfg.image_size, cfg.cache_mb = f"vtab:{task}", str(tmp_path), 16, 0
    for k, v in kw.items():
        cfg[k] = v
    return cfg


class _Batched:
    """A mock_data source with a working `__getitems__` (TFDS 4.9's mock binds it without `self`)."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, key):
        return self.source[key]

    def __getitems__(self, keys):
        return [self.source[int(k)] for k in keys]


@contextlib.contextmanager
def _mock_tfds(tmp_path, num_examples):
    with tfds.testing.mock_data(num_examples=num_examples, data_dir=str(tmp_path)):
        mocked = tfds.core.DatasetBuilder.as_data_source
        with mock.patch.object(tfds.core.DatasetBuilder, "as_data_source",
                               lambda self, *a, **kw: _Batched(mocked(self, *a, **kw))):
            yield


def test_derived_label_tasks_load_through_the_pipeline_by_name(tmp_path):
    """Mock TFDS records (random, in each builder's real feature layout) go through pipeline.load."""
    from tl_research.data import pipeline
    with _mock_tfds(tmp_path, num_examples=10):
        data = pipeline.load(_vtab_config(tmp_path, "dsprites_location", image_size=64, cache_mb=64))
        assert data.num_classes == 16 and data.image_shape == (64, 64, 1)
        records = data.train.source.__getitems__([int(i) for i in data.train.indices])
        assert data.train.labels.tolist() == [int(r["label_x_position"]) // 2 for r in records]  # 32 -> 16 bins
        assert set(np.unique(data.train.images)) == {0, 255}  # sprites scaled by 255 as the benchmark does

        norb = pipeline.load(_vtab_config(tmp_path, "smallnorb_elevation"))
        records = norb.test.source.__getitems__([int(i) for i in norb.test.indices])
        assert norb.num_classes == 9 and norb.test.labels.tolist() == [int(r["label_elevation"]) for r in records]

        kitti = pipeline.load(_vtab_config(tmp_path, "kitti_distance", classes=(0, 1, 2, 3)))
        assert kitti.num_classes == 4 and kitti.image_shape == (16, 16, 3) and len(kitti.train) == 10

        # random CLEVR scenes hold 5..49 objects, outside the task's 3..10: a clear error, not a wrong label
        with pytest.raises(ConfigError, match=r"data\.name='vtab:clevr_count'.*gives label"):
            pipeline.load(_vtab_config(tmp_path, "clevr_count"))
        with pytest.raises(ConfigError, match=r"data\.name='vtab:clevr_cnt'.*vtab:clevr_count"):
            pipeline.load(_vtab_config(tmp_path, "clevr_cnt"))


class _Scenes:
    """A data source of hand-made CLEVR records for one split string of absolute slices: record k of TFDS
    split "train" holds 3 + k % 8 objects, of "validation" 3 + (k + 5) % 8."""

    SIZES = {"train": 2500, "validation": 300}

    def __init__(self, split):
        import re
        self.keys = []
        for part in split.split("+"):
            name, a, b = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", part).groups()
            self.keys += [(name, k) for k in range(int(a or 0), int(b or self.SIZES[name]))]

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        name, k = self.keys[i]
        n = 3 + (k + (5 if name == "validation" else 0)) % 8
        return {"image": np.full((6, 6, 3), k % 256, np.uint8),
                "objects": {"size": np.zeros(n, np.int64), "pixel_coords": np.ones((n, 3), np.float32)}}

    def __getitems__(self, keys):
        return [self[int(k)] for k in keys]


def test_a_vtab_task_uses_its_own_and_the_protocol_splits(tmp_path):
    from tl_research.data import pipeline
    requested = []

    def as_data_source(self, split, decoders=None, **kwargs):
        requested.append(split)
        return _Scenes(split)

    train_label = lambda k: k % 8  # 3 + k % 8 objects -> label k % 8
    with tfds.testing.mock_data(as_data_source_fn=as_data_source, data_dir=str(tmp_path)):
        data = pipeline.load(_vtab_config(tmp_path, "clevr_count", image_size=6))
        assert data.num_classes == 8 and data.class_names == [str(c) for c in range(8)]
        # train[:90%] / train[90%:] / validation, cut as the benchmark does
        assert {"train[:2250]", "train[2250:2500]", "validation[:300]"} <= set(requested)
        assert data.train.labels.tolist() == [train_label(k) for k in range(2250)]
        assert data.val.labels.tolist() == [train_label(k) for k in range(2250, 2500)]
        assert data.test.labels.tolist() == [(k + 5) % 8 for k in range(300)]

        tune = pipeline.load(_vtab_config(tmp_path, "clevr_count", image_size=6, vtab="train800"))
        assert tune.train.labels.tolist() == [train_label(k) for k in range(800)]
        assert tune.val.labels.tolist() == [train_label(k) for k in range(2250, 2450)]  # val200
        final = pipeline.load(_vtab_config(tmp_path, "clevr_count", image_size=6,
                                           train_split="train800val200", val_split="val200"))
        assert final.train.labels.tolist() == [train_label(k) for k in [*range(800), *range(2250, 2450)]]
        assert len(final.test) == 300

        with pytest.raises(ConfigError, match=r"data\.val_split='validation'.*train800"):
            pipeline.load(_vtab_config(tmp_path, "clevr_count", val_split="validation"))
        with pytest.raises(ConfigError, match=r"data\.label_key='label_x'.*'objects'"):
            pipeline.load(_vtab_config(tmp_path, "clevr_count", label_key="label_x"))
