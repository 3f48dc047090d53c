"""Runs launch.py several times from one process, to test what survives a crash or a second launch
without paying Python's and JAX's start-up for each: the modules are imported once, then each launch runs
in a forked child (JAX's backend is started in the child, never here, so the fork is safe).

    python tests/forked_launches.py PLAN.json

PLAN.json is a list of batches, run one after the other; a batch is a list of launches started together,
each {"argv": [...], "env": {...}, "log": PATH}. Prints the exit codes, one list per batch, as JSON.
"""
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import launch  # noqa: E402
from tl_research.cli import command_line  # noqa: E402,F401 - imported once, here
from tl_research.analysis import results
from tl_research.sweeps import sweep
from tl_research.run import trainer


def start(job: dict) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.environ.update(job.get("env", {}))
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = launch.main(job["argv"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(plan_path: str) -> None:
    codes = []
    for batch in json.loads(pathlib.Path(plan_path).read_text()):
        pids = [start(job) for job in batch]
        codes.append([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids])
    print(json.dumps(codes))


if __name__ == "__main__":
    main(sys.argv[1])
