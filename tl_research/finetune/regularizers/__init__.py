"""The fine-tuning regularisers of the transfer literature (`strategy.regularizer`), beside decoupled weight decay.

A regulariser is a Term: its hyper-parameters (a frozen, hashable dataclass, part of the train step's spec,
tl_research.run.steps.TrainSpec.regularizer) and what it computes. The train step calls `apply` once, in its
loss function: the forward pass the term needs and the penalty added to the task's loss (each term's value is
also a train metric, logged as train_reg_<name>). What a term needs besides the batch:

    l2_sp       the anchor: the starting weights of the units (L2-SP, Li et al. 2018, arXiv 1802.01483)
    delta       the anchor: the starting units' weights and BatchNorm statistics (the source network, run in
                inference mode on the same batch) and the channel attention computed once before training;
                the outputs of chosen units (DELTA, Li et al. 2019, arXiv 1901.09229)
    bss         the classifier's input (the penultimate features) of the batch (BSS, Chen et al. 2019)
    stochnorm   nothing: a model change (the units' BatchNorm layers become StochNorm, models.norm; Kou et
                al. 2020), its draws from the step's dropout key
    co_tuning   the source classifier, kept as a second head (head.source_classifier) and trained, and the
                category relationship p(y_s | y_t) computed once before training (the anchor) (Co-Tuning, You
                et al. 2020)

    Term.from_config(strategy block)    the term; Term.check(config): its own checks (ConfigError)
    Term.extend(model, config, weights) the model with what the term changes or adds (setup, after the strategy's)
    Term.prepare(...)                   arrays computed before training from the starting model and training set
    Term.anchor / anchor_shardings      what the train step receives as `anchor`, and its placement (a prefix of it)
    Term.apply(model, images, targets, call, ctx) -> (outputs, penalty or None, metrics)

`weight_decay` and `none` are no term (the optimizer's decoupled weight decay, or nothing); bss, stochnorm and
co_tuning keep the optimizer's weight decay beside them (as TLlib runs them, weight decay 5e-4), l2_sp and delta
replace it (TLlib's DELTA runs without). A new one: subclass Term, `register` it; its keys go in the strategy block.
"""
from __future__ import annotations

from tl_research.finetune.regularizers.base import PLAIN, Pass, Term, err, get, names, number, register
# the built-in terms, registered in this order (the order strategy.regularizer's error lists them in)
from tl_research.finetune.regularizers import l2_sp, delta, bss, stochnorm, co_tuning  # noqa: F401

__all__ = ["NAMES", "Pass", "Term", "apply", "check", "extend", "get", "names", "register", "term",
           "weight_decay_applies"]


def __getattr__(attr: str):
    """`NAMES`: every strategy.regularizer value (the plain ones and the registered terms), read when asked."""
    if attr == "NAMES":
        return ("weight_decay", "l2_sp", "none", *(n for n in names() if n != "l2_sp"))
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def term(config) -> Term | None:
    """The config's regulariser term (None for weight_decay and none)."""
    cls = get(config.strategy.regularizer)
    return None if cls is None else cls.from_config(config.strategy)


def weight_decay_applies(name: str) -> bool:
    """Whether the optimizer's decoupled weight decay applies under strategy.regularizer=name."""
    cls = get(name)
    return name == "weight_decay" if cls is None else cls.keeps_weight_decay


KEY_RANGES = {  # every term's numeric keys, checked whichever regulariser is chosen: (lo, hi, integer)
    "delta_alpha": (0.0, None, False), "delta_beta": (0.0, None, False),
    "delta_attention_examples": (1, None, True), "bss_eta": (0.0, None, False), "bss_k": (1, None, True),
    "stochnorm_p": (0.0, 1.0, False), "co_tuning_lambda": (0.0, None, False),
    "co_tuning_source_scale": (0.0, None, False)}


def check(config) -> None:
    """The regulariser keys' checks (after strategy.regularizer is known to be a NAMES value): every term's
    numeric keys, then the chosen term's conditions (its starting weights, its task) and its own checks."""
    s = config.strategy
    for key, (lo, hi, integer) in KEY_RANGES.items():
        number(s, key, lo=lo, hi=hi, integer=integer)
    if not isinstance(s.delta_attention, bool):
        raise err("delta_attention", s.delta_attention, "True (the paper's supervised channel attention) or False "
                                                        "(every channel weighs 1)")
    if s.co_tuning_source_scale <= 0:
        raise err("co_tuning_source_scale", s.co_tuning_source_scale, "a number > 0 (1: the source logits as they are)")
    from tl_research.finetune.regularizers.co_tuning import RELATIONSHIPS
    if s.co_tuning_relationship not in RELATIONSHIPS:
        raise err("co_tuning_relationship", s.co_tuning_relationship, ", ".join(RELATIONSHIPS),
                  why="calibrated: the paper's, learnt with held-out validation data; direct: TLlib's average")
    units = s.delta_units
    if not isinstance(units, (tuple, list)) or any(isinstance(u, bool) or not isinstance(u, int) or u < 0
                                                   for u in units):
        raise err("delta_units", units, "() (the units before each downsampling, and the last) or unit indices")
    cls = get(s.regularizer)
    if cls is None:
        return
    if cls.transfer_only and config.init == "scratch":
        scratch = ", ".join(n for n in (*PLAIN, *names()) if n in PLAIN or not get(n).transfer_only)
        raise err("regularizer", s.regularizer, f"{scratch} for init=scratch",
                  why=f"{s.regularizer} needs transferred starting weights and a scratch run has none")
    task = config.get("task", "classification")
    if cls.classification_only and task != "classification":
        raise err("regularizer", s.regularizer, f"l2_sp, stochnorm, weight_decay or none for task={task}",
                  why=f"{s.regularizer} reads the classification head")
    cls.check(config)


def extend(model, config, weights):
    """The model with what the config's regulariser changes or adds (itself for the plain ones)."""
    t = term(config)
    return model if t is None else t.extend(model, config, weights)


def apply(t: Term | None, model, images, targets: dict, call: dict, **ctx):
    """(outputs, penalty or None, metrics): the train step's forward pass `model(images, **call)` and its
    regulariser's penalty (`ctx`: Pass's fields)."""
    if t is None:
        return model(images, **call), None, {}
    return t.apply(model, images, targets, call, Pass(**ctx))
