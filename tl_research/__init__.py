"""tl_research: transfer-learning ablations in JAX/Flax NNX.

The package's wings, lowest first: a wing imports only from the wings above it in this list, never from one
below (tests/test_structure.py checks the order, as well as the absence of import cycles between modules).
    core/         errors, durable writes, locks, logs, distributed setup, sharding, timing, tracking, runtime
    models/       the architectures, split into depth units plus a head
    checkpoints/  pretrained weights: converters (Keras, torchvision/timm, big_vision), save, load, transfer
    data/         datasets (built-in, TFDS, folders, VTAB) and their registry, the input pipeline, augmentation
    evals/        evaluators on the devices, classification metrics, the few-shot probe, domain similarity,
                  transferability scores (LogME, LEEP, NCE, H-score)
    tasks/        classification, segmentation, detection: one folder each behind the Task contract (base.py)
    finetune/     what trains and how fast: strategies behind the Strategy contract, freezing, LR schedules
    config/       the locked config: defaults, overrides, sweep axes, run identity, loading, validation
    run/          one run: setup, compiled steps, host state, the loop, the feature cache, the LR range test
    analysis/     a sweep's results and tables, the domain-similarity column, transferability scores and their
                  rank correlations
    sweeps/       a sweep of runs: its workdir, the job a launcher submits, local and SLURM launchers
    cli/          the commands (launch.py's flags, convert, prepare, fewshot_command, similarity_command,
                  transferability)
    experiments/  the paper-style experiments, each one command
The modules left at the top level (convert, prepare, fewshot_command, similarity_command, transferability) only
keep the documented `python -m tl_research.X` commands working; their code lives in cli/.
"""
