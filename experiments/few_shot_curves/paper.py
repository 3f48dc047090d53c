"""few_shot_curves at the paper's scale (a GPU's): BiT-M R50x1 (ImageNet-21k) on CIFAR-10, CIFAR-100, Oxford-IIIT
Pet and Oxford Flowers-102 with 1, 5, 10 and 25 examples per class, as BiT's few-shot transfer (Kolesnikov et al.
2020, arXiv 1912.11370), the same four arms as the built-in experiment (tl_research.experiments.few_shot_curves).

Weights: BiT-M-R50x1.npz from https://storage.googleapis.com/bit_models/, converted once (docs/pretrained.md):
    python -m tl_research.convert BiT-M-R50x1.npz --arch resnetv2_50x1_bit --out weights/bit_m_r50x1
INIT below names that directory (a placeholder until converted); the dry run says whether it is there.
Data: the four TFDS datasets prepared in data.data_dir (python -m tl_research.prepare cifar10 ...).

Protocol, BiT-HyperRule for datasets under 20k examples (github.com/google-research/big_transfer,
bit_hyperrule.py and bit_pytorch/train.py): 500 steps of batch 512, SGD with momentum 0.9 at LR 0.003, no weight
decay, linear warm-up over 100 steps, the LR divided by 10 at steps 200, 300 and 400; no mixup under 20k
examples; images resized to 128 (CIFAR: under 96x96) or 480 pixels, random 16-pixel-padded crops and flips (BiT:
random crops from 160 / 512 and flips); the weights at the last step. The closed-form probe reads the frozen
features of the whole training split (one step, every unit frozen) at 1/5/10/25 shots, DRAWS draws each; the
linear probe, full fine-tuning and scratch train on data.per_class examples per class, a draw seeded by the run's
seed. 5 seeds. Flowers-102's training split holds 10 images per class: 1, 5 and 10 shots there (the probe's
draws of 25 take the 10 there are); the analysis compares shot counts on the targets that have both.

    python -m tl_research.experiments run few_shot_curves --scale paper [--dry_run]

tests/test_exp_new.py validates every point of this sweep's config (tl_research.config.validate) on mock TFDS
data with random weights (init=scratch in place of the converted checkpoint).
"""
from tl_research.config import axis, base_config, product
from tl_research.experiments import few_shot_curves as fsc

INIT = "weights/bit_m_r50x1"  # placeholder: the converted BiT-M R50x1
WEIGHTS = {INIT: "python -m tl_research.convert BiT-M-R50x1.npz --arch resnetv2_50x1_bit --out " + INIT
                 + " (BiT-M-R50x1.npz: https://storage.googleapis.com/bit_models/)"}
SEEDS = (0, 1, 2, 3, 4)
STEPS, WARMUP, DRAWS = 500, 100, 5
TARGETS = {  # name -> its data keys: splits (a validation split where TFDS has none) and BiT's resolution
    "cifar10": {"data.name": "cifar10", "data.train_split": "train[:45000]", "data.val_split": "train[45000:]",
                "data.image_size": 128},
    "cifar100": {"data.name": "cifar100", "data.train_split": "train[:45000]", "data.val_split": "train[45000:]",
                 "data.image_size": 128},
    "oxford_iiit_pet": {"data.name": "oxford_iiit_pet", "data.train_split": "train[:90%]",
                        "data.val_split": "train[90%:]", "data.image_size": 480},
    "oxford_flowers102": {"data.name": "oxford_flowers102", "data.train_split": "train",
                          "data.val_split": "validation", "data.image_size": 480},
}
MAX_SHOTS = {"oxford_flowers102": 10}  # Flowers-102's training split holds 10 images of each class
# the wording of the analysis's tables and verdicts where the digits' names the data (common.text)
TEXTS = {"target": "CIFAR-10, CIFAR-100, Oxford-IIIT Pet and Flowers-102",
         "title": "BiT-M R50x1 source, CIFAR-10, CIFAR-100, Pet and Flowers-102 targets",
         "seeds": "each seed its own draw of the examples, from the one checkpoint"}
def get_config(arg=None):
    c = base_config()
    c.name = "few_shot_curves_paper"
    c.model.name = "resnetv2_50x1_bit"
    c.init = INIT
    c.data.name = "cifar10"
    c.data.batch_size = 512
    c.precision = "bfloat16"
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 0.0
    c.schedule.name = "step"
    c.schedule.lr = 0.003
    c.schedule.warmup_steps = WARMUP
    c.schedule.milestones = (0.25, 0.5, 0.75)  # of the 400 steps after the warm-up: steps 200, 300, 400
    c.schedule.factor = 0.1
    c.augment = ("flip", "crop(16)")
    c.train.steps = STEPS
    c.train.eval_every = STEPS
    c.train.restore_best = False
    c.evals.fewshot = dict(type="fewshot", every=-1, shots=fsc.SHOTS, seeds=DRAWS, l2_reg=2.0 ** 10)
    c.report.x = "data.per_class"
    c.report.series = ("label", "data.name")
    c.report.metric = "test_accuracy"
    return c


def arm(name: str) -> dict:
    """One arm's keys (tl_research.experiments.few_shot_curves.ARMS), the source being the converted checkpoint."""
    keys = dict(fsc.ARMS[name])
    if keys["init"] == "source":
        keys["init"] = INIT
    return {"label": name, **keys}


def get_sweep(arg=None):
    trained = [arm(name) for name in fsc.ARMS if name != fsc.PROBE]
    points = []
    for name, keys in TARGETS.items():
        shots = [k for k in fsc.SHOTS if k <= MAX_SHOTS.get(name, max(fsc.SHOTS))]
        arms = [arm(fsc.PROBE)] + product(axis("data.per_class", shots), trained)
        points += product(axis("seed", list(SEEDS)), [keys], arms)
    return points
