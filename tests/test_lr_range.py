"""The LR range test: exponential LRs, the smoothed curve, Smith's bounds, and a schedule that reads them."""
import json

import numpy as np
import pytest

from tl_research.run import lr_range

from tl_research.finetune import schedules
from tl_research.core.errors import ConfigError


def test_lrs_rise_exponentially_from_min_to_max():
    lrs = lr_range.exponential_lrs(1e-4, 1.0, 5)
    np.testing.assert_allclose(lrs, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-5)


def test_smith_bounds_from_a_curve():
    lrs = lr_range.exponential_lrs(1e-4, 10.0, 6)  # 1e-4 .. 10, one decade per step
    smoothed = np.array([2.0, 1.95, 1.5, 1.0, 3.0, 9.0])
    s = lr_range.suggest(lrs, smoothed, start_drop=0.1)
    assert s["max_lr"] == pytest.approx(1e-1, rel=1e-5)  # the minimum
    assert s["base_lr"] == pytest.approx(1e-2, rel=1e-5)  # first below 2.0 - 0.1 * (2.0 - 1.0) = 1.9
    assert s["base_lr_quarter"] == pytest.approx(s["max_lr"] / 4)
    with pytest.raises(ConfigError, match="lr_range.min_lr"):
        lr_range.suggest(lrs, np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))


def test_smoothing_is_bias_corrected():
    np.testing.assert_allclose(lr_range.smooth([3.0, 3.0, 3.0], 0.9), [3.0, 3.0, 3.0])


def test_a_range_test_writes_bounds_a_cyclical_schedule_uses(tiny_config, tmp_path):
    cfg = tiny_config(**{"lr_range.steps": 40, "lr_range.min_lr": 1e-4, "lr_range.max_lr": 100.0})
    out = lr_range.run(cfg, tmp_path / "rt", progress=False, echo=lambda *_: None)
    saved = json.loads((tmp_path / "rt" / "range_test.json").read_text())
    assert (tmp_path / "rt" / "range_test.png").stat().st_size > 0
    assert saved["base_lr"] == out["base_lr"] and 1e-4 <= saved["base_lr"] < saved["max_lr"] <= 100.0
    assert saved["diverged"] and saved["steps_run"] < 40  # a LR of 100 blows the loss up before the end
    assert len(saved["lrs"]) == len(saved["losses"]) == saved["steps_run"]
    # the smoothed curve's minimum sits at max_lr
    assert saved["lrs"][int(np.nanargmin(saved["smoothed"]))] == saved["max_lr"]
    sched = tiny_config(**{"schedule.name": "cyclical", "schedule.step_size": 5,
                           "schedule.range_test": str(tmp_path / "rt" / "range_test.json")}).schedule
    fn = schedules.build(sched, 20, 10)
    assert float(fn(0)) == pytest.approx(saved["base_lr"], rel=1e-5)
    assert float(fn(5)) == pytest.approx(saved["max_lr"], rel=1e-5)


@pytest.mark.parametrize("key, value", [("lr_range.steps", 3), ("lr_range.max_lr", 1e-6),
                                        ("lr_range.diverge", 1.0)])
def test_bad_range_settings_name_their_key(tiny_config, key, value):
    from tl_research import config as C
    with pytest.raises(ConfigError) as e:
        C.validate(tiny_config(**{key: value}))
    assert e.value.key == key
