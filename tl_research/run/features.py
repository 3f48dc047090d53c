"""A trained model's penultimate features over a dataset: its depth units and the head's global pooling, in
inference mode (BatchNorm on the running statistics), on images preprocessed as its weights expect.

    extractor = FeatureExtractor(model_cfg, weights, meta, in_channels=1)
    means, counts = extractor.class_means(data, data.train)   # per-class mean feature and image count

What Cui et al. 2018's domain similarity (tl_research.evals.similarity) and linear evaluations of fixed features
(Kornblith et al. 2019) are computed on.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from tl_research import models

from tl_research.run import setup, steps
from tl_research.checkpoints import weights as weights_lib
from tl_research.data import pipeline
from tl_research.models.base import ModelMeta
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
