"""A trained model's penultimate features over a dataset: its depth units and the head's global pooling, in
inference mode (BatchNorm on the running statistics), on images preprocessed as its weights expect.

    extractor = FeatureExtractor(model_cfg, weights, meta, in_channels=1)
    means, counts = extractor.class_means(data, data.train)   # per-class mean feature and image count

What Cui et al. 2018's domain similarity (tl_research.evals.similarity) and linear evaluations of fixed features
(Kornblith et al. 2019) are computed on. `LayerFeatures` gives every depth unit's pooled output and the source
classifier's logits in one pass: what the transferability scores read (tl_research.analysis.transferability).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from tl_research import models

from tl_research.run import setup, steps
from tl_research.checkpoints import weights as weights_lib
from tl_research.data import pipeline
from tl_research.models.base import ModelMeta, global_pool
from tl_research.evals.similarity import ClassMeans


class FeatureExtractor:
    """The penultimate features of `weights` loaded into the architecture `model_cfg` (the classifier is not
    used): a run's compiled feature step (steps.build_features, which config.evals' few-shot probe
    runs during training), batches sharded over all devices. Compiled once per input shape."""

    def __init__(self, model_cfg, weights: weights_lib.Weights, meta: ModelMeta | None, in_channels: int):
        self.meta = meta or ModelMeta()
        # the classifier's size does not matter: transfer() re-initialises it and features never reach it
        model = models.build(model_cfg, 2, in_channels)
        weights_lib.transfer(model, weights)
        graphdef, param_paths, stat_paths, params, stats = steps.split_model(model)
        value_range, mean, std = setup.normaliser(self.meta, in_channels)  # as a run preprocesses
        mesh_ = setup.mesh()
        self._features = steps.build_features(steps.FeaturesSpec(
            net=steps.Net(graphdef, param_paths, stat_paths), value_range=value_range, mean=mean, std=std,
            mesh=mesh_, pool=model.head.pool))
        self._weights = jax.device_put((params, stats), NamedSharding(mesh_, P()))
        self._sharding, self._devices = NamedSharding(mesh_, P("data")), mesh_.size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, C) -> float32 (B, D)."""
        n = len(images)
        pad = -n % self._devices  # the batch is split over the devices
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        out = self._features(*self._weights, steps.to_device({"image": images}, self._sharding))
        return np.asarray(jax.device_get(out))[:n]
    def class_means(self, data: pipeline.Dataset, split: pipeline.Split, batch_size: int = 250,
                    threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """(means (C, D), counts (C,)) over the examples of `split`, C = data.num_classes."""
        acc = ClassMeans(data.num_classes)
        for batch in pipeline.eval_batches(data, split, batch_size, threads):
            acc.update(self(batch["image"]), batch["label"], mask=batch["mask"])
        return acc.result()


class LayerFeatures:
    """Every depth unit's output, globally pooled, and the source classifier's logits: what the
    transferability scores read (tl_research.analysis.transferability), from one pass over a split.

    Unit k-1's output (what a frozen prefix of depth k hands on, k = 1..units) is average-pooled over its
    spatial or token axes; the last unit's is pooled as the model's head pools it (its penultimate features,
    as FeatureExtractor's; a `flatten` head's grid is averaged too). When the weights keep a classifier that
    fits the architecture `model_cfg` (a run's exported weights do; a converted checkpoint's usually do), the
    model is built with its classes and keeps it (`has_head`), and `logits` are the source classifier's
    outputs over its own classes; else `head_missing` says why and there are no logits."""

    def __init__(self, model_cfg, weights: weights_lib.Weights, meta: ModelMeta | None, in_channels: int):
        self.meta = meta or ModelMeta()
        model, self.head_missing = _with_source_head(model_cfg, weights, self.meta, in_channels)
        self.has_head = not self.head_missing
        self.num_units = model.num_units
        graphdef, param_paths, stat_paths, params, stats = steps.split_model(model)
        value_range, mean, std = setup.normaliser(self.meta, in_channels)
        mesh_ = setup.mesh()
        spec = steps.FeaturesSpec(net=steps.Net(graphdef, param_paths, stat_paths), value_range=value_range,
                                  mean=mean, std=std, mesh=mesh_, pool=model.head.pool)
        repl = NamedSharding(mesh_, P())
        self._step = _layer_step(spec, self.has_head)
        self._weights = jax.device_put((params, stats), repl)
        self._sharding, self._devices = NamedSharding(mesh_, P("data")), mesh_.size

    def __call__(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        """uint8 (B, H, W, C) -> ([float32 (B, D_k) for k = 1..units], float32 (B, Cs) logits or None)."""
        n = len(images)
        pad = -n % self._devices
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        pooled, logits = jax.device_get(self._step(*self._weights, steps.to_device({"image": images},
                                                                                   self._sharding)))
        return [np.asarray(p)[:n] for p in pooled], None if logits is None else np.asarray(logits)[:n]

    def split(self, data: pipeline.Dataset, split: pipeline.Split, batch_size: int = 250, threads: int = 2
              ) -> tuple[list[np.ndarray], np.ndarray | None, np.ndarray]:
        """(per-unit features [(N, D_k)], logits (N, Cs) or None, labels (N,)) over `split`, in its order."""
        feats, logits, labels = [], [], []
        for batch in pipeline.eval_batches(data, split, batch_size, threads):
            keep = batch["mask"]
            f, lg = self(batch["image"])
            feats.append([a[keep] for a in f])
            logits.append(None if lg is None else lg[keep])
            labels.append(batch["label"][keep])
        per_unit = [np.concatenate(col) for col in zip(*feats)]
        return per_unit, (None if logits[0] is None else np.concatenate(logits)), np.concatenate(labels)


@functools.lru_cache(maxsize=8)
def _layer_step(spec: steps.FeaturesSpec, head: bool):
    """jitted (params, stats, batch) -> (pooled output of every unit, the head's logits or None); one per
    architecture, preprocessing and mesh (a spec is hashable), so the checkpoints of one architecture that a
    ranking or a sweep scores share one compilation."""
    model_of, preprocess = spec.model_of(), spec.preprocess()
    pool = "avg" if spec.pool.startswith("flatten") else spec.pool  # a vector per image, not a flattened grid

    def layers(params, stats, batch):
        m = model_of(params, stats)
        last, outs = m.features(preprocess(batch["image"]), train=False, return_units=True)
        pooled = [global_pool(o, "avg") for o in outs[:-1]] + [global_pool(last, pool)]
        logits = m.head(last, train=False).astype(jnp.float32) if head else None
        return [p.astype(jnp.float32) for p in pooled], logits

    repl = NamedSharding(spec.mesh, P())
    return jax.jit(layers, in_shardings=(repl, repl, NamedSharding(spec.mesh, P("data"))), out_shardings=repl)


def _with_source_head(model_cfg, weights: weights_lib.Weights, meta: ModelMeta, in_channels: int):
    """(the model with the weights loaded, '' when it keeps their classifier, else why it could not)."""
    kernel = weights.get("params", {}).get(meta.classifier + ".kernel")
    why = "the weights hold no classifier" if kernel is None else ""
    if not why:
        model = models.build(model_cfg, int(np.shape(kernel)[-1]), in_channels)
        try:
            weights_lib.transfer(model, weights, reinit_head=False)
            return model, ""
        except weights_lib.CheckpointMismatch as e:
            why = f"its head does not fit model {model_cfg.name} ({str(e)[:160]})"
    model = models.build(model_cfg, 2, in_channels)
    weights_lib.transfer(model, weights)
    return model, why
