"""config.transfer_depth: the initial weights fill depth units 0..n-1 only; units n and above (and the head)
start as a run from scratch with the same seed does (Yosinski et al.'s AnB / AnB+ re-initialise the layers
above n)."""
import numpy as np
import pytest

from tl_research import config as config_lib
from tl_research import models
from tl_research.checkpoints import weights as weights_lib
from tl_research.core.errors import ConfigError
from tl_research.models.base import ModelMeta
from tl_research.run import setup as setup_lib


def _units(flat: dict, unit: int) -> dict:
    return {k: np.asarray(v) for k, v in flat.items() if k.startswith(f"units.{unit}.")}


def test_units_from_n_up_start_as_the_scratch_run_and_below_n_from_the_weights(tiny_config, tmp_path):
    source = models.build(tiny_config().model, 5, 1, seed=7)  # "trained" weights: another seed's init
    weights_lib.save_weights(tmp_path / "w", source, ModelMeta())
    src = weights_lib.flat_state(source)
    scratch = weights_lib.flat_state(setup_lib.setup(tiny_config(seed=3)).model)
    run = setup_lib.setup(tiny_config(seed=3, init=str(tmp_path / "w"), transfer_depth=2))
    got = weights_lib.flat_state(run.model)
    assert run.model.num_units == 3 and "units 2-2 re-initialised" in run.transfer_report
    for coll in ("params", "batch_stats"):
        for unit, ref in ((0, src), (1, src), (2, scratch)):
            expected = _units(ref[coll], unit)
            assert expected and all(np.array_equal(got[coll][k], v) for k, v in expected.items()), (coll, unit)
    # the two references differ, so the comparison above tells them apart
    assert not np.array_equal(src["params"]["units.2.conv1.kernel"], scratch["params"]["units.2.conv1.kernel"])
    # -1 (the default) loads every unit
    every = weights_lib.flat_state(setup_lib.setup(tiny_config(seed=3, init=str(tmp_path / "w"))).model)
    assert all(np.array_equal(every["params"][k], v) for k, v in _units(src["params"], 2).items())


@pytest.mark.parametrize("overrides, needle", [
    ({"transfer_depth": 4}, "config.transfer_depth=4 is not allowed; allowed: -1 (every unit) or 0..3"),
    ({"transfer_depth": 1}, "config.transfer_depth=1 is not allowed (there are no initial weights to load); allowed: -1 with init='scratch'"),
])
def test_a_bad_transfer_depth_is_one_line_naming_the_key(tiny_config, overrides, needle):
    with pytest.raises(ConfigError) as e:
        config_lib.validate(tiny_config(**overrides))
    assert needle in str(e.value) and "\n" not in str(e.value)
