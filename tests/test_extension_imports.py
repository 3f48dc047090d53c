"""`config.imports`: a strategy registered by a user's own file reaches every process that reads the config.
A local launcher's worker is a fresh Python process that never imported the config file, so a registration
made only there would leave it refusing `strategy.name`; the worker imports what config.imports names first."""
import subprocess
import sys
import textwrap

import pytest

from tl_research import config as C
from tl_research.core.errors import ConfigError
from tl_research.finetune import strategies
from tl_research.sweeps import launchers

from conftest import ROOT

EXTENSION = textwrap.dedent('''
    import dataclasses
    from tl_research.finetune import strategies

    @dataclasses.dataclass(frozen=True)
    class BiasPhase(strategies.Phase):
        def trainable(self, path):
            return path.endswith(".bias")

    class BiasesOnly(strategies.StrategyBase):
        name = "ext_biases_only"

        def phases(self, config, ctx):
            return [BiasPhase("biases", 0, ctx.total_steps, 0)]

    strategies.register(BiasesOnly())
''')

CONFIG = textwrap.dedent('''
    from tl_research.config import base_config
    def get_config(arg=None):
        c = base_config()
        c.name, c.imports = "ext", ({ext!r},)
        c.data.name, c.data.data_dir, c.data.classes = "sklearn_digits", {data_dir!r}, (0, 1, 2)
        c.data.batch_size, c.data.eval_batch_size = 32, 64
        c.model.stage_sizes, c.model.width = (1, 1), 4
        c.train.steps, c.train.eval_every, c.train.log_every = 4, 4, 2
        c.strategy.name, c.wandb.mode = "ext_biases_only", "disabled"
        return c
''')


def test_a_strategy_from_a_users_file_runs_on_a_local_worker(tmp_path, data_dir):
    ext = tmp_path / "my_strategies.py"
    ext.write_text(EXTENSION)
    cfg = tmp_path / "ext_config.py"
    cfg.write_text(CONFIG.format(ext=str(ext), data_dir=data_dir))
    out = subprocess.run([sys.executable, "launch.py", "--config", str(cfg), f"--workdir={tmp_path / 'work'}",
                          "--launcher=local", "--jobs=1", "--wait", "--no_progress"],
                         cwd=launchers.ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = (tmp_path / "work" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and ",done," in rows[1], rows


def test_an_import_that_fails_is_one_line_naming_config_imports(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"config.imports=\('no_such_module_xyz',\) is not allowed"):
        C.validate(tiny_config(imports=("no_such_module_xyz",)))
    with pytest.raises(ConfigError, match="FileNotFoundError"):
        C.validate(tiny_config(imports=(str(tmp_path / "missing.py"),)))


def test_a_file_is_imported_once_per_process(tiny_config, tmp_path):
    ext = tmp_path / "once.py"
    ext.write_text(EXTENSION.replace("ext_biases_only", "once_biases_only"))
    try:
        for _ in range(2):  # a second import would register a second object under the name: refused
            C.validate(tiny_config(imports=(str(ext),), **{"strategy.name": "once_biases_only"}))
    finally:
        strategies.unregister("once_biases_only")
