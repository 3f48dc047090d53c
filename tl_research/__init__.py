"""tl_research: transfer-learning ablations in JAX/Flax NNX."""
