"""A sweep of runs: its workdir, the job a launcher submits, local and SLURM launchers, waiting on jobs."""
