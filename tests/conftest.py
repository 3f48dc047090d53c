"""Shared fixtures: offline data prepared once per session, tiny configs, W&B disabled."""
import os
import pathlib
import sys

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
# submitit's import reconfigures logging (logging.config.dictConfig), which closes the handlers that exist,
# absl's among them, and absl's handler closes the stream it was made with. Imported inside a test, that
# stream is pytest's capture of stderr, and every later test fails on it; imported here, nothing is captured.
import submitit  # noqa: E402, F401


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The built-in datasets, prepared once into a session folder (never the user's ~/tensorflow_datasets)."""
    d = tmp_path_factory.mktemp("tfds")
    from tl_research.data import pipeline
    for name in ("mnist_subset", "sklearn_digits"):
        cfg = pipeline.default_config()
        cfg.name, cfg.data_dir = name, str(d)
        pipeline.builder(cfg)
    return str(d)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    from tl_research.run import trainer
    trainer.enable_compilation_cache(tmp_path_factory.mktemp("jax_cache"))


def tiny(data_dir, **overrides):
    """A config that trains in a few seconds: a 3-unit ResNet of width 4 on 8x8 sklearn digits."""
    from tl_research import config as C
    c = C.base_config()
    c.name = "test"
    c.data.name = "sklearn_digits"
    c.data.data_dir = data_dir
    c.data.classes = (0, 1, 2, 3, 4)
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.model.stage_sizes = (1, 1)
    c.model.width = 4
    c.schedule.lr = 0.1
    c.train.steps = 12
    c.train.eval_every = 4
    c.train.log_every = 2
    c.wandb.mode = "disabled"
    for k, v in overrides.items():
        C.set_value(c, k, v)
    return c


@pytest.fixture
def tiny_config(data_dir):
    return lambda **kw: tiny(data_dir, **kw)


TRANSFER_CONFIG = """
from tl_research.config import base_config, axis, product, chain, copy_config
def get_config(arg=None):
    c = base_config()
    c.name = "{name}"
    c.data.name = "sklearn_digits"
    c.data.data_dir = {data_dir!r}
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.model.stage_sizes = (1, 1)
    c.model.width = 4
    c.train.steps = {steps}
    c.train.eval_every = {eval_every}
    c.train.log_every = {log_every}
    c.train.checkpoint_every = {checkpoint_every}
    c.wandb.mode = "disabled"
    source = copy_config(c)
    source.data.classes = (0, 1, 2, 3, 4)
    c.init = "source"
    c.source = source
{settings}
    return c
def get_sweep(arg=None):
{sweep}
"""


def transfer_config(name, data_dir, *, sweep, settings="", steps=6, eval_every=3, log_every=3,
                    checkpoint_every=0) -> str:
    """The text of a tiny sweep config file, for tests that drive the command line or several processes: a
    source trained on digits 0-4 of the 8x8 digits (init='source'), the target digits 5-9; `settings` are more
    lines of get_config (c is the config), `sweep` the body of get_sweep."""
    def body(text):
        return "\n".join("    " + line for line in text.strip().splitlines())
    return TRANSFER_CONFIG.format(name=name, data_dir=data_dir, steps=steps, eval_every=eval_every,
                                  log_every=log_every, checkpoint_every=checkpoint_every, settings=body(settings),
                                  sweep=body(sweep))
