"""The experiments by name, in the order `run all` and experiments/README.md take them."""
from __future__ import annotations

from tl_research.core.errors import ConfigError
from tl_research.experiments import (class_imbalance, cyclical_lr, data_size, decision_matrix, domain_similarity,
                                     layer_transfer, lp_ft, peft_vs_full, surgical)
from tl_research.experiments.spec import Experiment

EXPERIMENTS: list[Experiment] = [m.EXPERIMENT for m in (layer_transfer, cyclical_lr, data_size, lp_ft,
                                                        domain_similarity, class_imbalance, decision_matrix,
                                                        surgical, peft_vs_full)]
EXPERIMENTS.append(__import__("tl_research.experiments.transferability_ranking", fromlist=["EXPERIMENT"]).EXPERIMENT)
EXPERIMENTS.append(__import__("tl_research.experiments.soups", fromlist=["EXPERIMENT"]).EXPERIMENT)
EXPERIMENTS.append(__import__("tl_research.experiments.regularizers", fromlist=["EXPERIMENT"]).EXPERIMENT)
EXPERIMENTS.append(__import__("tl_research.experiments.few_shot_curves", fromlist=["EXPERIMENT"]).EXPERIMENT)
EXPERIMENTS.append(__import__("tl_research.experiments.better_models_transfer", fromlist=["EXPERIMENT"]).EXPERIMENT)


def names() -> list[str]:
    return [e.name for e in EXPERIMENTS]


def get(name: str) -> list[Experiment]:
    """The experiment called `name` ('all': every one), as a list."""
    if name == "all":
        return list(EXPERIMENTS)
    for e in EXPERIMENTS:
        if e.name == name:
            return [e]
    raise ConfigError("experiment NAME", name, "all, " + ", ".join(names()), why="no such experiment")
