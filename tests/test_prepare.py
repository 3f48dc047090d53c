"""python -m tl_research.prepare and the launch's line for a dataset it cannot read: a tiny TFDS builder of this
file prepared in array_record (no TensorFlow) and read back with tfds.data_source; an unprepared dataset, one
prepared as tfrecord only, a builder that needs TensorFlow, one downloaded by hand and an unknown name each
give one `error:` line naming what to run, exit code 2."""
import importlib.util
import json
import pathlib
import shlex

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import launch
from tl_research.cli import prepare
from tl_research.data import pipeline
from tl_research.data.builtin import png_bytes

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAME = "tl_prepare_test_shapes"  # TinyShapes' TFDS name (TFDS registers a builder class under its snake_case)


class TlPrepareTestShapes(tfds.core.GeneratorBasedBuilder):
    """Six train and two test 4x4 grey images, labels alternating 0/1; array_record needs no TensorFlow."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(4, 4, 1)), "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 6), "test": self._generate_examples(6, 8)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield i, {"image": png_bytes(np.full((4, 4, 1), 10 * i, np.uint8)), "label": i % 2}


class TlPrepareTestNeedsTf(TlPrepareTestShapes):
    """A builder whose generate step imports TensorFlow, as many real TFDS builders do."""

    def _generate_examples(self, start, stop):
        import tensorflow  # noqa: F401 - absent here: what preparing such a builder meets
        yield from super()._generate_examples(start, stop)


class TlPrepareTestManual(TlPrepareTestShapes):
    """A dataset downloaded by hand (TFDS's manual_dir): its generate step reads labels.txt from there."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put labels.txt (the\n  tiny archive's) into manual_dir."

    def _split_generators(self, dl_manager):
        (dl_manager.manual_dir / "labels.txt").read_text()
        return super()._split_generators(dl_manager)


CONFIG = """
from tl_research.config import base_config
def get_config(arg=None):
    c = base_config()
    c.name = "prep"
    c.data.name = {name!r}
    c.data.data_dir = {data_dir!r}
    c.data.val_split = c.data.test_split = "test"
    c.data.batch_size = c.data.eval_batch_size = 2
    c.model.stage_sizes = (1, 1)
    c.model.width = 4
    c.wandb.mode = "disabled"
    return c
"""


def _launch(tmp_path, data_dir, capsys) -> tuple[int, str]:
    """launch.main on a tiny config reading NAME from data_dir: (exit code, stderr)."""
    config = tmp_path / "prep.py"
    config.write_text(CONFIG.format(name=NAME, data_dir=str(data_dir)))
    rc = launch.main(["--config", str(config), "--workdir", str(tmp_path / "w")])
    return rc, capsys.readouterr().err.strip()


def _prepare(capsys, *argv) -> tuple[int, str, str]:
    rc = prepare.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err.strip()


def _one_error_line(err: str) -> str:
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_prepare_writes_array_record_that_tfds_data_source_reads(tmp_path, capsys):
    data_dir = tmp_path / "tfds"
    rc, out, err = _prepare(capsys, NAME, "--data_dir", str(data_dir))
    assert rc == 0, err
    where = data_dir / NAME / "1.0.0"
    assert f"{NAME}: prepared in array_record at {where}" in out, out
    assert "splits: train 6, test 2" in out, out
    assert f"--config.data.name={NAME} --config.data.data_dir={data_dir}" in out, out
    assert sorted(p.name for p in where.glob("*.array_record-*")) == [
        f"{NAME}-test.array_record-00000-of-00001", f"{NAME}-train.array_record-00000-of-00001"]
    train = tfds.data_source(NAME, split="train", data_dir=str(data_dir))
    assert len(train) == 6 and len(tfds.data_source(NAME, split="test", data_dir=str(data_dir))) == 2
    record = train[3]
    assert record["image"].shape == (4, 4, 1) and int(record["image"][0, 0, 0]) == 30 and record["label"] == 1
    # a second time: left as it is
    rc, out, _ = _prepare(capsys, NAME, "--data_dir", str(data_dir))
    assert rc == 0 and f"{NAME}: already prepared in array_record at {where}" in out, out


def test_built_in_datasets_and_folders_are_prepared_by_their_own_builders(tmp_path, capsys):
    data_dir = tmp_path / "tfds"
    rc, out, err = _prepare(capsys, "sklearn_digits", "--data_dir", str(data_dir))
    assert rc == 0, err
    assert f"sklearn_digits: prepared in array_record at {data_dir / 'sklearn_digits' / '1.0.0'}" in out, out
    assert "splits: train 1,258, val 179, test 360" in out, out
    assert _prepare(capsys, "sklearn_digits", "--data_dir", str(data_dir))[1].startswith(
        "sklearn_digits: already prepared")
    photos = tmp_path / "photos"
    for c, cls in enumerate(("cat", "dog")):
        (photos / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((6, 5, 3), 40 * c + i, np.uint8)).save(photos / cls / f"{i}.png")
    rc, out, err = _prepare(capsys, f"folder:{photos}", "--data_dir", str(data_dir))
    assert rc == 0, err
    assert f"folder:{photos}: prepared in array_record at {data_dir / 'user_folder'}" in out, out
    assert "splits: train 4, val 2, test 2" in out, out  # folder.py's stratified 70 / 15 / 15 %, one of each class


def test_an_unprepared_dataset_stops_the_launch_with_the_prepare_command_that_fixes_it(tmp_path, capsys):
    data_dir = tmp_path / "tfds"
    rc, err = _launch(tmp_path, data_dir, capsys)
    assert rc == 2
    command = f"python -m tl_research.prepare {NAME} --data_dir {data_dir}"
    assert _one_error_line(err) == (f"error: config.data.name='{NAME}' is not allowed (not prepared in {data_dir}); "
                                    f"allowed: a prepared dataset: {command}")
    assert not (tmp_path / "w").exists()  # stopped before any work
    # the command the line names prepares it, after which the run's data loads
    argv = shlex.split(err.split("allowed: a prepared dataset: ")[1])[3:]
    assert _prepare(capsys, *argv)[0] == 0
    cfg = pipeline.default_config()
    cfg.name, cfg.data_dir, cfg.val_split, cfg.test_split = NAME, str(data_dir), "test", "test"
    data = pipeline.load(cfg)
    assert (len(data.train), len(data.test), data.num_classes) == (6, 2, 2)


def _as_tfrecord_only(variant: pathlib.Path) -> None:
    """What `tfds build` leaves (tfrecord, its default format), faked without TensorFlow (which writing tfrecord
    needs): dataset_info.json's fileFormat set to tfrecord and the record files renamed to tfrecord's names."""
    info = variant / "dataset_info.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "fileFormat": "tfrecord"}))
    for f in variant.glob("*.array_record-*"):
        f.rename(f.with_name(f.name.replace(".array_record-", ".tfrecord-")))


def test_a_dataset_prepared_as_tfrecord_only_names_array_record_and_is_rewritten_with_overwrite(tmp_path, capsys):
    data_dir = tmp_path / "tfds"
    assert _prepare(capsys, NAME, "--data_dir", str(data_dir))[0] == 0
    variant = data_dir / NAME / "1.0.0"
    _as_tfrecord_only(variant)
    rc, err = _launch(tmp_path, data_dir, capsys)
    assert rc == 2
    assert _one_error_line(err).startswith(f"error: config.data.name='{NAME}' is not allowed (prepared in {variant} "
                                           "as tfrecord only"), err
    assert "it must be array_record" in err, err
    assert err.endswith(f"python -m tl_research.prepare {NAME} --data_dir {data_dir} --overwrite"), err
    assert not (tmp_path / "w").exists()
    rc, _, err = _prepare(capsys, NAME, "--data_dir", str(data_dir))  # without --overwrite: told to add it
    assert rc == 2 and "as tfrecord only" in _one_error_line(err) and "--overwrite" in err, err
    rc, out, err = _prepare(capsys, NAME, "--data_dir", str(data_dir), "--overwrite")
    assert rc == 0 and "splits: train 6, test 2" in out, err
    assert len(tfds.data_source(NAME, split="train", data_dir=str(data_dir))) == 6
    assert not list(variant.glob("*.tfrecord-*"))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here")
def test_a_builder_that_needs_tensorflow_names_the_pip_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    data_dir = tmp_path / "tfds"
    rc, _, err = _prepare(capsys, "tl_prepare_test_needs_tf", "--data_dir", str(data_dir))
    assert rc == 2
    assert "needs TensorFlow" in _one_error_line(err) and "pip install -r requirements-prepare.txt" in err, err
    assert (ROOT / "requirements-prepare.txt").is_file()
    assert not TlPrepareTestNeedsTf(data_dir=str(data_dir)).is_prepared()  # nothing half-written left


def test_a_dataset_downloaded_by_hand_says_where_its_files_go(tmp_path, capsys):
    data_dir = tmp_path / "tfds"
    manual = data_dir / "downloads" / "manual"
    rc, _, err = _prepare(capsys, "tl_prepare_test_manual", "--data_dir", str(data_dir))
    assert rc == 2
    assert f"put its files in {manual}" in _one_error_line(err), err
    assert "Put labels.txt (the tiny archive's) into manual_dir." in err, err
    manual.mkdir(parents=True)
    (manual / "labels.txt").write_text("0\n1\n")
    rc, out, err = _prepare(capsys, "tl_prepare_test_manual", "--data_dir", str(data_dir))
    assert rc == 0 and "splits: train 6, test 2" in out, err


def test_an_unknown_name_is_one_line(tmp_path, capsys):
    rc, _, err = _prepare(capsys, "tl_no_such_dataset", "--data_dir", str(tmp_path))
    assert rc == 2
    assert "tl_no_such_dataset: no such dataset" in _one_error_line(err) and "vtab:TASK" in err, err
