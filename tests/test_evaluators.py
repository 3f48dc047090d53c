"""Evaluators: on-device classification counts equal the host's, the few-shot probe during a run equals the
probe on directly extracted features, extra splits report their metrics, bad config.evals name their key."""
import jax
import numpy as np
import optax
import pytest
from sklearn import metrics as sk_metrics
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from tl_research import config as C
from tl_research.evals import evaluators, fewshot, metrics
from tl_research import models
from tl_research.models.base import global_pool
from tl_research.run import setup, steps, trainer
from tl_research.checkpoints import weights as W
from tl_research.data import pipeline
from tl_research.core.errors import ConfigError
from tl_research.run.features import FeatureExtractor
from tl_research.core.tracking import read_metrics


def _fit_classifier(model, data, preprocess) -> None:
    """The head's classifier fitted to the training split's features (ridge regression on one-hot labels): a
    trained classifier whose predictions spread over the classes, right and wrong."""
    images = np.concatenate([b["image"][b["mask"]] for b in pipeline.eval_batches(data, data.train, 100)])
    feats = np.asarray(global_pool(model.features(preprocess(images)), model.head.pool), np.float64)
    mean = feats.mean(0)
    x, y = feats - mean, np.eye(data.num_classes)[data.train.labels] - 1.0 / data.num_classes
    w = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ y)
    model.head.classifier.kernel.set_value(jax.numpy.asarray(w, jax.numpy.float32))
    model.head.classifier.bias.set_value(jax.numpy.asarray(-mean @ w, jax.numpy.float32))


def test_on_device_counts_equal_the_host_computation_with_a_padded_last_batch(tiny_config):
    cfg = tiny_config()
    data = pipeline.load(cfg.data)
    model = models.build(cfg.model, data.num_classes, data.image_shape[2], seed=1)
    norm = setup.normaliser(None, data.image_shape[2])
    _fit_classifier(model, data, steps.preprocessor(*norm))  # a zero classifier would predict class 0 everywhere
    graphdef, pp, sp, params, stats = steps.split_model(model)
    mesh = setup.mesh()
    step = steps.build_eval(steps.EvalSpec(net=steps.Net(graphdef, pp, sp), value_range=norm[0], mean=norm[1],
                                           std=norm[2], mesh=mesh))
    batch_size = 32
    assert len(data.val) % batch_size  # the last batch is padded
    put = lambda b: steps.to_device(b, NamedSharding(mesh, P("data")))  # noqa: E731
    counts = evaluators.Classification(step, data, data.val, put, batch_size=batch_size).counts(params, stats)

    images = np.concatenate([b["image"][b["mask"]] for b in pipeline.eval_batches(data, data.val, 100)])
    logits = np.asarray(nnx.merge(graphdef, nnx.state(model))(steps.preprocessor(*norm)(images), train=False))
    preds = logits.argmax(-1)
    assert len(set(preds.tolist())) >= 3 and 0.0 < float(np.mean(preds == data.val.labels)) < 1.0
    losses = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, data.val.labels))
    assert counts.count == len(data.val)
    assert counts.accuracy == float(np.mean(preds == data.val.labels))
    assert counts.loss == pytest.approx(float(np.mean(losses.astype(np.float64))), rel=1e-6)
    np.testing.assert_array_equal(counts.confusion, sk_metrics.confusion_matrix(data.val.labels, preds, labels=range(5)))
    assert counts.detail() == metrics.classification_metrics(preds, data.val.labels, 5)


def _features(extractor, data, split, batch_size):
    return np.concatenate([extractor(b["image"])[b["mask"]] for b in pipeline.eval_batches(data, split, batch_size)])


def test_a_run_logs_and_reports_its_extra_evaluators(tiny_config, data_dir, tmp_path):
    cfg = tiny_config(**{"data.eval_batch_size": 48})
    cfg.evals.fewshot = dict(type="fewshot", shots=(1, 5, 10), seeds=2)
    cfg.evals.own_test = dict(type="classification", split="test")  # the run's test split: its test metrics
    cfg.evals.half = dict(type="classification", split="test[:50%]", every=-1)  # a TFDS split of the run's data
    cfg.evals.mnist = dict(type="classification", split="test", data="mnist_subset", every=8)  # same classes
    C.validate(cfg)
    result = trainer.run(cfg, tmp_path / "r", progress=False)
    assert result.status == "done", result.reason
    m = result.metrics
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert [r["step"] for r in rows if "fewshot/10shot_accuracy" in r] == [4, 8, 12]  # at every validation eval
    assert [r["step"] for r in rows if "mnist/accuracy" in r] == [8]
    assert not [r for r in rows if "half/accuracy" in r]  # -1: only at the end
    assert {"fewshot_1shot_accuracy", "fewshot_10shot_accuracy_std", "half_accuracy", "half_macro_f1",
            "mnist_accuracy", "mnist_balanced_accuracy", "mnist_loss"} <= set(m)
    assert m["own_test_accuracy"] == m["test_accuracy"] and m["own_test_loss"] == pytest.approx(m["test_loss"])
    assert m["own_test_balanced_accuracy"] == m["test_balanced_accuracy"]
    assert 0 <= m["half_accuracy"] <= 1 and 0 <= m["mnist_accuracy"] <= 1

    # the probe at the end is fewshot.probe on the exported weights' features, as features.py extracts them
    weights, meta = W.load_weights(tmp_path / "r" / "weights")
    data = pipeline.load(cfg.data, meta, seed=cfg.seed)
    extractor = FeatureExtractor(cfg.model, weights, meta, data.image_shape[2])
    train_x = _features(extractor, data, data.train, 48)
    test_x = _features(extractor, data, data.test, 48)
    expected = fewshot.probe(train_x, data.train.labels, test_x, data.test.labels, data.num_classes, (1, 5, 10), 2)
    for k, v in expected.items():
        assert m[f"fewshot_{k}"] == pytest.approx(v, abs=1e-12), k


@pytest.mark.parametrize("name, ev, key", [
    ("x", dict(type="linear"), "evals.x.type"),
    ("fewshot", dict(type="fewshot", every=-2), "evals.fewshot.every"),
    ("fewshot", dict(type="fewshot", shots=(0, 5)), "evals.fewshot.shots"),
    ("fewshot", dict(type="fewshot", shots=()), "evals.fewshot.shots"),
    ("fewshot", dict(type="fewshot", seeds=0), "evals.fewshot.seeds"),
    ("fewshot", dict(type="fewshot", shot=5), "evals.fewshot.shot"),
    ("b", dict(type="classification", split=""), "evals.b.split"),
    ("test", dict(type="classification", split="val"), "evals.test"),
])
def test_bad_evals_name_their_key(tiny_config, name, ev, key):
    cfg = tiny_config()
    cfg.evals[name] = ev
    with pytest.raises(ConfigError) as e:
        C.validate(cfg)
    assert e.value.key == key and "allowed" in str(e.value)
