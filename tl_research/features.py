"""A trained model's penultimate features over a dataset: its depth units and the head's global pooling, in
inference mode (BatchNorm on the running statistics), on images preprocessed as its weights expect.

    extractor = FeatureExtractor(model_cfg, weights, meta, in_channels=1)
    means, counts = extractor.class_means(data, data.train)   # per-class mean feature and image count

What Cui et al. 2018's domain similarity (tl_research.similarity) and linear evaluations of fixed features
(Kornblith et al. 2019) are computed on.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from tl_research import models, trainer
from tl_research.checkpoints import weights as weights_lib
from tl_research.data import pipeline
from tl_research.models.base import ModelMeta, global_pool
from tl_research.similarity import ClassMeans


class FeatureExtractor:
    """The penultimate features of `weights` loaded into the architecture `model_cfg` (the classifier is not
    used). Compiled once per input shape."""

    def __init__(self, model_cfg, weights: weights_lib.Weights, meta: ModelMeta | None, in_channels: int):
        self.meta = meta or ModelMeta()
        # the classifier's size does not matter: transfer() re-initialises it and features never reach it
        model = models.build(model_cfg, 2, in_channels)
        weights_lib.transfer(model, weights)
        graphdef, state = nnx.split(model)
        preprocess = trainer.preprocessor(*trainer.normaliser(self.meta, in_channels))  # as the trainer does
        pool = model.head.pool

        def features(state, images):
            m = nnx.merge(graphdef, state)
            return global_pool(m.features(preprocess(images), train=False), pool)

        self._state = state
        self._features = jax.jit(features)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, C) -> float32 (B, D)."""
        return np.asarray(self._features(self._state, images))

    def class_means(self, data: pipeline.Dataset, split: pipeline.Split, batch_size: int = 250,
                    threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """(means (C, D), counts (C,)) over the examples of `split`, C = data.num_classes."""
        acc = ClassMeans(data.num_classes)
        for batch in pipeline.eval_batches(data, split, batch_size, threads):
            acc.update(self(batch["image"]), batch["label"], mask=batch["mask"])
        return acc.result()
