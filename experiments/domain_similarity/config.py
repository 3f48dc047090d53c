"""Domain similarity vs transfer gain (Cui et al. 2018, arXiv 1806.06193) in the paper's design: several source
domains ranked for one target by their similarity, measured with one common feature extractor.

Target: MNIST digits 5-9 (mnist_subset, relabelled 0-4), 600 training images, grey 28x28. Sources: the small
ResNet trained from scratch for 5 epochs on each of 7 source domains: digits 0-4 of each rung of the domain
ladder (MNIST, scikit-learn's digits upsampled, MNIST inverted, MNIST-M; other classes) and digits 5-9 of the
three rungs other than the target's own (the target's classes in another look), all read in grey. The common
feature extractor: the same network trained on all ten MNIST digits (Cui et al. use one Inception-v3 trained on
JFT, which holds their targets' images too); the sweep trains it as the source of one linear-probe run.
`report.similarity_features` points at it, so every (source, target) pair's exp(-0.01 EMD) is measured on its
features. Arms per source: full fine-tune and linear probe, 60 steps, cosine decay; scratch on the target is the
baseline the gain is measured against (paired: the same seed draws the same 600 images); 5 seeds of the target
runs, one network per source domain (the sources are the independent units of the ranking).

    python -m tl_research.experiments run domain_similarity
"""
from tl_research import config as config_lib
from tl_research.config import axis, chain, product
from tl_research.experiments.common import small_base
from tl_research.data.domains import LADDER

SEEDS = (0, 1, 2, 3, 4)
TARGET = ("mnist_subset", (5, 6, 7, 8, 9))
LOW, HIGH = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
SHORT = {"mnist_subset": "mnist", "digits_upsampled": "upsampled", "mnist_inverted": "inverted",
         "mnist_m": "mnist-m"}
# (name, dataset, classes): every rung's other classes, and the target's classes on the other rungs
SOURCES = tuple([(f"{SHORT[d]} 0-4", d, LOW) for d in LADDER]
                + [(f"{SHORT[d]} 5-9", d, HIGH) for d in LADDER if d != TARGET[0]])
EXTRACTOR = ("mnist 0-9", "mnist_subset", tuple(range(10)))


def _target():
    """The target run: the experiments' small ResNet on MNIST digits 5-9, grey (every domain is read in grey: one
    input for every source and the extractor), 60 steps."""
    c = small_base("exp_domain_similarity", classes=TARGET[1])
    c.data.name = TARGET[0]
    return c


def source_config(dataset: str, classes) -> "config_lib.ConfigDict":
    """A source network: from scratch on all training images of `classes` of `dataset`, 5 epochs, seed 0."""
    s = _target()
    s.name = "exp_domain_similarity-source"
    s.data.name, s.data.classes = dataset, tuple(classes)
    s.init, s.frozen_depth, s.seed = "scratch", 0, 0
    s.train.steps, s.train.epochs, s.train.eval_every = 0, 5.0, 0
    return s


def extractor_dir() -> str:
    """The common extractor's run directory, relative to the workdir (where the sweep trains it)."""
    return f"sources/{config_lib.config_hash(source_config(*EXTRACTOR[1:]))}"


def get_config():
    c = _target()
    c.init = "source"
    c.source = source_config(*SOURCES[0][1:])
    c.data.train_examples = 600
    c.report.x = "label"  # the source domain
    c.report.series = ("frozen_depth",)
    c.report.metric = "test_accuracy"
    c.report.similarity = True
    c.report.similarity_features = extractor_dir()
    return c


def _source_keys(name: str, dataset: str, classes) -> dict:
    return {"label": name, "source.data.name": dataset, "source.data.classes": tuple(classes)}


def get_sweep():
    transfers = product([_source_keys(*s) for s in SOURCES], axis("frozen_depth", [0, "all"]))
    scratch = [{"init": "scratch", "frozen_depth": 0, "label": "scratch"}]
    extractor = {**_source_keys(*EXTRACTOR), "label": f"extractor ({EXTRACTOR[0]})", "frozen_depth": "all"}
    return product(axis("seed", list(SEEDS)), chain(transfers, scratch)) + [{"seed": 0, **extractor}]
