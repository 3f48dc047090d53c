"""regularizers at the paper's scale (a GPU's): TLlib's task-adaptation benchmark (thuml/Transfer-Learning-Library,
examples/task_adaptation/image_classification) on CUB-200-2011: an ImageNet ResNet-50 fine-tuned on 15%, 30%, 50%
and 100% of the labelled training images, plain fine-tuning (TLlib's ERM) against L2-SP, DELTA, BSS, StochNorm
and Co-Tuning, each at TLlib's default strength (the arms of tl_research.experiments.regularizers.METHODS).

Weights: torchvision's ImageNet ResNet-50 (resnet50-0676ba61.pth, IMAGENET1K_V1: the weights TLlib's and the
Co-Tuning authors' code load), converted once WITH its classifier (Co-Tuning keeps it as a second head):
    python -m tl_research.convert resnet50-0676ba61.pth --arch resnet50 --out weights/resnet50_tv
INIT below is a placeholder for that directory (or torch:PATH): set it, or pass --config.init=... .
Data: TFDS caltech_birds2011 (5,994 training and 5,794 test images, 200 classes), prepared in data.data_dir.

Protocol (TLlib's, with what differs):
- 10,000 steps (TLlib: 20 epochs x 500 iterations) of batch 48, SGD with momentum 0.9, weight decay 5e-4 (none
  for L2-SP and DELTA, as TLlib), the LR divided by 10 after 60% of the steps (TLlib: at epoch 12 of 20).
  TLlib trains the backbone at 0.001 and the new head at 0.01; this codebase has one LR for the network (its
  discriminative LRs, strategy.lr_decay, fall geometrically per unit): LR = 0.001, the backbone's.
- Training images: random-resized crops (area 0.2 to 1) and flips at 224 (TLlib's default train resizing, on
  images resized to 224 / 0.875 here); evaluation: shorter side 256, centre crop 224 (data.crop_pct 0.875).
- Validation: 20% of the training split (train[80%:], 1,199 images), the Co-Tuning and StochNorm papers' protocol
  for datasets without one ("we use 20% training data for validation"): it selects the reported step and is
  the held-out data of Co-Tuning's calibrated relationship. TLlib trains on all 5,994 and reports the best test
  accuracy over its epochs. The label fractions are of the remaining 4,795 images (stratified, drawn per seed;
  TLlib's are fixed lists of 15% ... of each class).
- Co-Tuning: the calibrated relationship (the paper's) with the source logits scaled by 0.884 before their
  softmax, the temperature the authors' code (github.com/thuml/CoTuning) fitted for this ResNet-50 on ImageNet.
- 3 seeds; 4 fractions x 6 arms x 3 seeds = 72 runs.

    python launch.py --config experiments/regularizers/paper.py --config.init=weights/resnet50_tv \\
        --workdir runs/regularizers_paper

tests/test_exp_regularizers.py validates every arm, fraction and seed of this sweep's config
(tl_research.config.validate and the starting weights' check) on mock TFDS data with random ResNet-50 weights.
"""
from tl_research.config import axis, base_config, product
from tl_research.experiments import regularizers as R

INIT = "weights/resnet50_tv"  # placeholder: the converted torchvision ResNet-50 with its classifier (set it)
SEEDS = (0, 1, 2)
FRACTIONS = (15, 30, 50, 100)  # TLlib's sample rates
TRAIN_SIZE = 4795  # train[:80%] of caltech_birds2011's 5,994 training images
SOURCE_SCALE = 0.8840456604957581  # the Co-Tuning authors' ImageNet calibration of this ResNet-50's logits


def get_config(arg=None):
    c = base_config()
    c.name = "regularizers_paper"
    c.model.name = "resnet50"
    c.init = INIT
    c.data.name = "caltech_birds2011"
    c.data.train_split, c.data.val_split, c.data.test_split = "train[:80%]", "train[80%:]", "test"
    c.data.image_size = 224
    c.data.crop_pct = 0.875
    c.data.batch_size = 48
    c.augment = ("rrc(0.2)", "flip")
    c.optimizer.name = "sgd"
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.schedule.name = "step"
    c.schedule.lr = 1e-3
    c.schedule.milestones = (0.6,)
    c.schedule.factor = 0.1
    c.train.steps = 10000
    c.train.eval_every = 500
    c.strategy.co_tuning_source_scale = SOURCE_SCALE  # read by co_tuning alone
    c.report.x = "data.train_examples"
    c.report.series = ("label",)
    c.report.metric = "test_accuracy"
    return c


def get_sweep(arg=None):
    arms = [{"label": m, "strategy.regularizer": r} for m, r in R.METHODS.items()]
    counts = [0 if f == 100 else R.train_examples(f, TRAIN_SIZE) for f in FRACTIONS]  # 0: every image
    return product(axis("seed", list(SEEDS)), axis("data.train_examples", counts), arms)
