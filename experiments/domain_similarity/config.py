"""Domain similarity vs transfer gain (Cui et al. 2018, arXiv 1806.06193).

configs/domain_similarity.py (source: digits 0-4; targets: digits 5-9 on the 4 rungs of the domain ladder, 600
training images; linear probe and full fine-tune; 60 steps; 3 seeds; measured exp(-0.01 EMD) similarity), with
W&B off, the source model's seed following the run's (source.seed = -1: one source model per seed, so the
interval over seeds holds its variance), and one more arm: scratch on every target and seed, the baseline the
gain is measured against (paired: the same seed draws the same 600 images).

    python -m tl_research.experiments run domain_similarity
"""
import pathlib

from tl_research.config import RUN_SEED, axis, chain, load_module, product
from tl_research.data.domains import LADDER

_BASE = load_module(str(pathlib.Path(__file__).resolve().parents[2] / "configs" / "domain_similarity.py"))


def get_config():
    c = _BASE.get_config()
    c.name = "exp_domain_similarity"
    c.wandb.mode = "disabled"
    c.source.seed = RUN_SEED
    c.report.series = ("init", "frozen_depth")
    return c


def get_sweep():
    scratch = product(axis("seed", list(_BASE.SEEDS)), axis("data.name", list(LADDER)),
                      [{"init": "scratch", "frozen_depth": 0}])
    return chain([{**p, "init": "source"} for p in _BASE.get_sweep()], scratch)
