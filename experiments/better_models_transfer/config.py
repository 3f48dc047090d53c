"""Do better source models transfer better? (Kornblith, Shlens, Le 2019, arXiv 1805.08974) on a zoo of 8 models
trained from scratch on digits 0-4.

The zoo (tl_research.experiments.better_models_transfer.ZOO): the shared small ResNet (stem + 3 residual blocks)
at widths 4, 8 and 16, each trained on all 1,750 training images of digits 0-4 of mnist_subset for 1 or 5
epochs, and vit_micro at 16x16 trained for 3 or 10 epochs (AdamW, LR 3e-3); each is a source model of the
workdir, its test accuracy on digits 0-4 the "source accuracy".
Targets: digits 5-9 of mnist_subset and of mnist_inverted (read in grey), all their training images.
Arms per model and target:
  logistic regression  the `logreg` evaluator (L-BFGS logistic regression on the frozen penultimate features of
                       the whole training split, C chosen on val, refit on train + val) in a run of one step with
                       every unit frozen: its logreg_accuracy
  fine-tuned           every unit trained from the source, 60 steps of batch 32 (ResNet SGD 0.05, ViT AdamW
                       1e-3, cosine): its test accuracy at the best validation step

    python -m tl_research.experiments run better_models_transfer
"""
from tl_research.config import axis, product
from tl_research.experiments import better_models_transfer as bmt
from tl_research.experiments.common import small_base, with_source

TARGETS = ("mnist_subset", "mnist_inverted")
STEPS = 60


def get_config():
    c = with_source(small_base("better_models_transfer", steps=STEPS))
    c.evals.logreg = dict(type="logreg", every=-1)  # after the source copy: the sources carry no evaluator
    c.report.x = "label"
    c.report.series = ("frozen_depth",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    models = [{"label": name, **keys} for name, keys in bmt.ZOO.items()]
    return product(models, axis("data.name", list(TARGETS)), list(bmt.ARMS.values()))
