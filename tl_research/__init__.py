"""tl_research: transfer-learning ablations in JAX/Flax NNX.

The package's wings, lowest first (a wing imports only from wings above it in this list, never upward):
    core/         errors, durable writes, locks, distributed setup, sharding, timing, tracking, runtime, interrupts
    config/       the locked config: defaults, overrides, sweep axes, run identity, file loading, validation
    models/       the architectures, split into depth units plus a head
    checkpoints/  pretrained weights: converters (Keras, torchvision/timm, big_vision) and the weights a run starts from
    data/         datasets (built-in, TFDS, folders, VTAB), the input pipeline, augmentation, sampling
    tasks/        classification, segmentation, detection: a folder each, behind one contract (tasks/base.py)
    finetune/     what trains and how fast: strategies, freezing, LR schedules
    evals/        evaluators, metrics, the few-shot probe
    run/          one run: the trainer (setup, compiled steps, loop), the feature cache, the LR range test
    analysis/     a sweep's results and tables, domain similarity
    sweeps/       a sweep of runs: its workdir, the job a launcher submits, local and SLURM launchers
    cli/          the commands (launch.py's flags, convert, prepare, fewshot_command, similarity_command)
    experiments/  the paper-style experiments, each one command
The modules left at the top level (convert, prepare, fewshot_command, similarity_command) only keep the
documented `python -m tl_research.X` commands working; their code lives in cli/.
"""
