"""Few-shot transfer curves (BiT, Kolesnikov et al. 2020, arXiv 1912.11370): 1, 5, 10 and 25 examples per class of
a target, from a source model, four ways.

Source: the shared small ResNet (tl_research/experiments/common.py) trained from scratch on all 1,750 training
images of digits 0-4 of mnist_subset for 5 epochs; each seed trains its own (source.seed = -1: the run's seed).
Targets: digits 5-9 on two rungs of the domain ladder, mnist_subset (the source's own domain) and mnist_inverted
(inverted contrast, read in grey), 1, 5, 10 or 25 training images per class (data.per_class, a stratified draw
seeded by the run's seed, nested across sizes), scored on the whole test split (500 images).
Arms (tl_research.experiments.few_shot_curves.ARMS):
  closed-form probe  the `fewshot` evaluator (big_vision's fewshot_lsr: ridge regression on the whitened frozen
                     penultimate features, l2 = 2^10) at 1/5/10/25 shots, DRAWS draws each, from a run that
                     reads the source's features over the whole training split (frozen_depth=all, one step)
  linear probe       the source's units frozen (frozen_depth=all), a new head trained by SGD
  fine-tune          every unit trained from the source (frozen_depth=0)
  scratch            every unit trained from a random initialisation: the floor
The three trained arms share one fixed schedule whatever the number of examples, as BiT-HyperRule fixes one
per dataset-size bracket (under 20k examples: 500 steps, 100 warm-up, the LR divided by 10 at 200, 300 and
400): STEPS steps of batch 32, WARMUP warm-up steps, the LR divided by 10 at 25%, 50% and 75% of the rest,
SGD with momentum 0.9, no weight decay (BiT's fine-tuning has none), the weights at the last step (nothing
selected on validation: BiT-HyperRule reports the end of its fixed schedule).

    python -m tl_research.experiments run few_shot_curves
"""
from tl_research.config import axis, product
from tl_research.experiments import few_shot_curves as fsc
from tl_research.experiments.common import small_base, with_source

SEEDS = (0, 1, 2, 3, 4)
STEPS, WARMUP = 50, 10
DRAWS = 5  # the closed-form probe's draws per shot count (the fewshot evaluator's seeds)


def get_config():
    c = with_source(small_base("few_shot_curves", steps=STEPS))
    c.optimizer.weight_decay = 0.0  # after the source copy: the source trains as every experiment's does
    c.schedule.name = "step"
    c.schedule.warmup_steps = WARMUP
    c.schedule.milestones = (0.25, 0.5, 0.75)
    c.schedule.factor = 0.1
    c.train.restore_best = False
    c.train.eval_every = STEPS  # the last step is what is reported: no evaluation before it
    c.train.log_every = 10
    # config.evals cannot be set per run: every run carries the probe, the analysis reads it from the probe arm
    c.evals.fewshot = dict(type="fewshot", every=-1, shots=fsc.SHOTS, seeds=DRAWS, l2_reg=2.0 ** 10)
    c.report.x = "data.per_class"
    c.report.series = ("label", "data.name")
    c.report.metric = "test_accuracy"
    return c


def get_sweep():
    arms = [{"label": fsc.PROBE, **fsc.ARMS[fsc.PROBE]}]
    arms += product(axis("data.per_class", list(fsc.SHOTS)),
                    [{"label": name, **keys} for name, keys in fsc.ARMS.items() if name != fsc.PROBE])
    # the source model takes the run's seed (common.with_source): each seed trains its own, so an interval over
    # seeds includes the source's variance
    return product(axis("seed", list(SEEDS)), axis("data.name", list(fsc.TARGETS)), arms)
