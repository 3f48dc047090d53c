"""Nothing is read or checked twice before a run starts: the weights config.init names and the dataset's builder,
read by config.validate / check_initial_weights, are the ones the run reads (a per-process memo), until their
files change; a config is validated once per process, by a sweep or by trainer.run itself."""
import os

import numpy as np
import pytest

from tl_research import config as C, models
from tl_research.checkpoints import weights as weights_lib
from tl_research.config import validation
from tl_research.core.errors import ConfigError
from tl_research.data import pipeline
from tl_research.run import trainer


def test_the_run_reads_the_weights_and_the_builder_validation_read(tiny_config, tmp_path):
    cfg = tiny_config()
    weights_dir = tmp_path / "w"
    weights_lib.save_weights(weights_dir, models.build(cfg.model, 5, 1, seed=3), models.ModelMeta())
    cfg.init = str(weights_dir)
    weights_lib.LOADED.clear()
    pipeline.BUILDERS.clear()
    loads, builds = weights_lib.LOADED.computed, pipeline.BUILDERS.computed
    C.validate(cfg)
    C.check_initial_weights(cfg)
    assert weights_lib.LOADED.computed == loads + 1
    weights, _ = trainer.init_weights(cfg.init, cfg.model)  # what trainer.setup reads
    pipeline.load(cfg.data, seed=cfg.seed)
    assert (weights_lib.LOADED.computed, pipeline.BUILDERS.computed) == (loads + 1, builds + 1)
    fresh = weights_lib._read_weights(weights_dir)[0]
    for coll, table in fresh.items():  # the same values, read-only: no caller changes another's
        for k, v in table.items():
            np.testing.assert_array_equal(weights[coll][k], v)
            assert not weights[coll][k].flags.writeable

    meta = weights_dir / weights_lib.META_FILE  # weights written again: read again
    os.utime(meta, ns=(meta.stat().st_atime_ns, meta.stat().st_mtime_ns + 1))
    trainer.init_weights(cfg.init, cfg.model)
    assert weights_lib.LOADED.computed == loads + 2


def test_a_run_is_validated_once_whether_a_sweep_or_trainer_run_starts_it(tiny_config, tmp_path, monkeypatch):
    checked = []
    real = validation.validate
    monkeypatch.setattr(validation, "validate", lambda c, **kw: checked.append(c.seed) or real(c, **kw))
    # started directly, a bad config stops with the key validate names, before any work
    with pytest.raises(ConfigError, match="train.log_every"):
        trainer.run(tiny_config(**{"train.log_every": 0}), tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
    cfg = tiny_config(**{"train.steps": 2, "train.eval_every": 2, "seed": 11})
    validation.validate(cfg)  # as a sweep does for each of its runs before any starts (C.validate)
    assert trainer.run(cfg, tmp_path / "a", progress=False).status == "done"
    assert checked == [0, 11]  # the run did not check its config again
    cfg.seed = 12  # another config: checked when its run starts
    assert trainer.run(cfg, tmp_path / "b", progress=False).status == "done"
    assert checked == [0, 11, 12]
