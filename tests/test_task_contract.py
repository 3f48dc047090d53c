"""A task from outside the package plugs in through the Task contract (tl_research/tasks/base.py): a toy
regression, "the share of bright pixels", defined in this module with its own target spec, loss, metric and
evaluator, registered with `tasks.register`, is accepted by config validation, its target arrays ride in the
data pipeline's batches of the built-in digits, a short run trains it and writes its metric, and results.csv
leads with its columns. The built-in tasks meet the same contract."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tl_research import config as C
from tl_research import models, tasks
from tl_research.analysis import results
from tl_research.core.errors import ConfigError
from tl_research.data import pipeline, targets as targets_lib
from tl_research.run import trainer
from tl_research.tasks import base, split_eval

from conftest import tiny

BRIGHT = 128  # a pixel at least this bright counts


def _resolve(cfg, b, shape, crop_pct) -> targets_lib.TargetSpec:
    """The share of the record's image pixels at or above BRIGHT, as a float32 scalar per example."""
    key = cfg.image_key

    def read(record: dict) -> dict[str, np.ndarray]:
        image = np.asarray(record[key])
        return {"bright": np.float32(np.mean(image >= BRIGHT))}

    return targets_lib.TargetSpec("bright", ["bright"], read)  # one output: the head's one unit


BRIGHT_TARGETS = targets_lib.Targets("bright", {"bright": 0.0}, resolve=_resolve, bytes_per_example=lambda s: 4)


@dataclasses.dataclass(frozen=True)
class Objective:
    def for_eval(self) -> "Objective":
        return self

    def prepare(self, batch: dict, images: jax.Array, key: jax.Array):
        return images, {"bright": batch["bright"]}

    def loss(self, outputs: jax.Array, targets: dict, hp: dict):
        err = outputs[:, 0].astype(jnp.float32) - targets["bright"]
        return jnp.mean(err ** 2), {"mae": jnp.mean(jnp.abs(err))}

    def reduce(self, outputs: jax.Array, batch: dict) -> dict:
        err = jnp.where(batch["mask"], outputs[:, 0].astype(jnp.float32) - batch["bright"], 0.0)
        return {"sq": jnp.sum(err ** 2), "abs": jnp.sum(jnp.abs(err)), "n": jnp.sum(batch["mask"])}


@dataclasses.dataclass
class Score:
    sq: float
    abs: float
    n: float

    @property
    def metric(self) -> float:  # higher is better, as selection wants: 1 - mean absolute error
        return 1.0 - self.abs / max(self.n, 1.0)

    @property
    def loss(self) -> float:
        return self.sq / max(self.n, 1.0)

    def values(self) -> dict:
        return {"closeness": self.metric, "mae": 1.0 - self.metric, "loss": self.loss}

    summary = detail = values


class BrightPixels:
    name = "bright_pixels"
    target_spec = BRIGHT_TARGETS
    targets = target_spec.name
    metric = "closeness"
    result_columns = ("val_closeness", "test_closeness", "test_mae")
    cacheable, cache_reason = False, "a toy"

    def check(self, config) -> None:
        self.parse_augment(config.augment)

    def parse_augment(self, ops) -> tuple:
        if tuple(ops):
            raise ConfigError("augment", tuple(ops), "()", why=f"config.task={self.name}")
        return ()

    def build_model(self, config, data, weights):
        return models.build(config.model, data.num_classes, data.image_shape[2], seed=config.seed), "scratch"

    def objective(self, config, data, augment_ops: tuple = (), normaliser=None) -> Objective:
        return Objective()

    def evaluator(self, eval_step, data, split, put, *, batch_size: int, threads: int = 2):
        return split_eval.SplitEval(
            eval_step, data, split, put, batch_size=batch_size, threads=threads, combine=split_eval.add,
            score=lambda s: Score(float(s["sq"]), float(s["abs"]), float(s["n"])))


@pytest.fixture
def toy(monkeypatch):
    """BrightPixels registered for this test only (the registries restored after it)."""
    monkeypatch.setattr(base, "_TASKS", dict(base._TASKS))
    monkeypatch.setattr(targets_lib, "REGISTRY", dict(targets_lib.REGISTRY))
    return tasks.register(BrightPixels())


def _config(data_dir, **overrides):
    c = tiny(data_dir, **{"data.classes": (), "task": "bright_pixels", **overrides})
    C.resolve_task_targets(c)
    return c


def test_the_built_in_tasks_meet_the_contract():
    for name in ("classification", "segmentation", "detection"):
        task = tasks.get(name)
        assert isinstance(task, tasks.Task) and task.targets == task.target_spec.name
        assert task.result_columns[0] == f"val_{task.metric}"
        assert targets_lib.get(task.targets) is task.target_spec
    assert tasks.get("classification").cacheable and not tasks.get("segmentation").cacheable


def test_register_refuses_an_object_short_of_the_contract(toy):
    class Half:
        name, targets = "half", "label"
    with pytest.raises(TypeError, match="target_spec"):
        tasks.register(Half())
    assert "half" not in tasks.NAMES


def test_a_toy_task_from_outside_the_package_validates_loads_and_trains(toy, data_dir, tmp_path):
    assert "bright_pixels" in tasks.NAMES and tasks.get("bright_pixels") is toy
    config = _config(data_dir)
    assert config.data.targets == "bright"
    C.validate(config)  # config.task=bright_pixels is one of the tasks; its options pass
    assert tasks.selection_metric(config) == "val_closeness"
    with pytest.raises(ConfigError, match="augment"):
        C.validate(_config(data_dir, augment=("flip",)))
    with pytest.raises(ConfigError, match="background_weight"):  # segmentation's option, not the toy's
        C.validate(_config(data_dir, **{"train.background_weight": 0.5}))

    # the pipeline reads the toy's targets in place of the label: the batch carries its arrays
    data = pipeline.load(config.data, seed=0, targets=toy.target_spec)
    assert data.num_classes == 1 and data.targets.kind == "bright"
    batch = next(pipeline.train_batches(data, 8, seed=0, start_step=0, num_steps=1))
    assert set(batch) == {"image", "bright"} and batch["bright"].shape == (8,)
    expected = np.mean(batch["image"] >= BRIGHT, axis=(1, 2, 3))  # 8x8 digits: no resize
    np.testing.assert_allclose(batch["bright"], expected, atol=1e-6)
    last = list(pipeline.eval_batches(data, data.test, 64))[-1]
    assert (last["bright"][~last["mask"]] == 0.0).all()  # the padded rows carry the declared pad

    # a short run trains the toy's head and writes its metric
    config.train.steps, config.train.eval_every = 8, 4
    result = trainer.run(config, tmp_path / "run", progress=False)
    assert result.status == "done", result.reason
    m = result.metrics
    assert {"val_closeness", "test_closeness", "test_mae"} <= set(m) and 0.0 < m["test_closeness"] <= 1.0
    assert m["feature_path"] and "cached" not in str(m["feature_path"])  # not cacheable: from the images

    # results.csv leads with the toy's columns, as it does with the built-in tasks'
    path = tmp_path / "results.csv"
    results.write_rows(path, [{"run_id": "r", "status": "done", "wall_time": 1.0, "zeta": 1,
                               **{k: m[k] for k in toy.result_columns}}])
    assert path.read_text().splitlines()[0] == "run_id,status,val_closeness,test_closeness,test_mae,wall_time,zeta"
