import numpy as np
import pytest
import tensorflow_datasets as tfds

from tl_research.data import vtab
from tl_research.errors import ConfigError


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


def test_registry_matches_the_tfds_builders(tmp_path):
    """Every task's TFDS builder (mock data, no download) has the label field and the registered classes."""
    with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path)):
        for task in vtab.VTAB_TASKS.values():
            b = tfds.builder(task.tfds_name, data_dir=str(tmp_path))
            features = b.info.features
            assert task.image_key in features and task.label_key in features, task.name
            if task.label_fn is None:
                assert features[task.label_key].num_classes == task.num_classes, task.name
            elif isinstance(features[task.label_key], tfds.features.ClassLabel):  # binned dSprites
                top = features[task.label_key].num_classes - 1
                assert task.label({task.label_key: top}) == task.num_classes - 1, task.name
            # mock builders carry no split metadata; where a builder has it, the splits must exist
            names = set(b.info.splits.keys())
            for split in (task.train, task.val, task.test):
                assert not names or split.split("[")[0] in names, (task.name, split)
            if task.label_fn is not None:  # the label function reads the fields the records have
                for record in b.as_data_source(split="train"):
                    if all(len(v) for v in record.get("objects", {"": [0]}).values()):
                        assert isinstance(task.label(record), int), task.name
