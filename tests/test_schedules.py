"""Learning-rate schedules: exact values at the points the papers define, and the config-facing build."""

import importlib.util
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from tl_research.finetune import schedules as S
from tl_research.core.errors import ConfigError

REL = 1e-6  # the tolerance set when schedules ran in float32; float64 on the host meets it


def at(schedule, *steps):
    """The schedule at the given steps, evaluated as one int32 array. Padded to a fixed length so that
    eager JAX (optax's formulas, in float64) reuses its per-shape compiled primitives across tests (keeps
    the file fast)."""
    n = len(steps)
    padded = np.zeros(-(-n // 256) * 256, np.int32)
    padded[:n] = steps
    return np.asarray(schedule(jnp.asarray(padded)), dtype=np.float64)[:n]


# --------------------------------------------------------------------------- cyclical (Smith 2017)


def test_triangular_base_max_base_and_halfway():
    s = S.cyclical(0.1, 0.5, step_size=10)
    np.testing.assert_allclose(at(s, 0, 5, 10, 15, 20, 30), [0.1, 0.3, 0.5, 0.3, 0.1, 0.5], rtol=REL)


def test_scalar_step_gives_a_scalar():
    s = S.with_warmup(S.constant(0.5), 4)
    assert jnp.shape(s(jnp.int32(2))) == () and float(s(jnp.int32(2))) == pytest.approx(0.25)


def test_triangular2_halves_each_peak():
    base, top, s = 0.1, 0.9, 10
    sched = S.cyclical(base, top, s, mode="triangular2")
    np.testing.assert_allclose(at(sched, s, 3 * s, 5 * s, 4 * s),
                               [top, base + (top - base) / 2, base + (top - base) / 4, base], rtol=REL)


def test_exp_range_scales_by_gamma_to_the_step():
    base, top, s, gamma = 0.1, 0.9, 10, 0.99
    sched = S.cyclical(base, top, s, mode="exp_range", gamma=gamma)
    np.testing.assert_allclose(at(sched, s, 3 * s, 0),
                               [base + (top - base) * gamma**s, base + (top - base) * gamma**(3 * s), base],
                               rtol=1e-5)


# --------------------------------------------------------------------------- slanted triangular (ULMFiT)


def test_slanted_triangular_points():
    T, lr_max, ratio = 1000, 0.01, 32
    sched = S.slanted_triangular(T, lr_max, cut_frac=0.1, ratio=ratio)
    cut = 100
    p_end = 1 - (T - 1 - cut) / (cut * (1 / 0.1 - 1))
    np.testing.assert_allclose(
        at(sched, 0, cut // 2, cut, T - 1, T),
        [lr_max / ratio, lr_max * (1 + 0.5 * (ratio - 1)) / ratio, lr_max,
         lr_max * (1 + p_end * (ratio - 1)) / ratio, lr_max / ratio], rtol=REL)


def test_slanted_triangular_never_drops_below_its_floor():
    # T * cut_frac fractional: the raw formula would go negative before T; it holds lr_max / ratio.
    sched = S.slanted_triangular(105, 1.0, cut_frac=0.1, ratio=32)
    values = at(sched, *range(106))
    assert values.min() == pytest.approx(1 / 32, rel=REL)


# --------------------------------------------------------------------------- one cycle (Smith & Topin)


def onecycle_reference(total_steps, max_lr, pct_start, div_factor, final_div_factor, anneal, t,
                       base_momentum=0.85, max_momentum=0.95):
    """PyTorch OneCycleLR.get_lr (three_phase=False), re-written in plain Python for one step."""
    initial = max_lr / div_factor
    phases = [(float(pct_start * total_steps) - 1, initial, max_lr, max_momentum, base_momentum),
              (total_steps - 1, max_lr, initial / final_div_factor, base_momentum, max_momentum)]

    def interp(start, end, pct):
        if anneal == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    start_step = 0
    for i, (end_step, lr0, lr1, m0, m1) in enumerate(phases):
        if t <= end_step or i == len(phases) - 1:
            pct = (t - start_step) / (end_step - start_step)
            return interp(lr0, lr1, pct), interp(m0, m1, pct)
        start_step = end_step


def test_one_cycle_start_peak_end():
    T, top = 100, 0.4
    sched = S.one_cycle(T, top, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    np.testing.assert_allclose(at(sched, 0, 29, T - 1), [top / 25, top, top / 25 / 1e4], rtol=1e-5)
    assert at(sched, *range(T)).argmax() == 29


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("T,pct", [(100, 0.3), (37, 0.25), (1000, 0.45)])
def test_one_cycle_matches_pytorch_formula(anneal, T, pct):
    steps = sorted({0, 1, 2, T // 7, int(pct * T) - 1, int(pct * T), T // 2, T - 2, T - 1})
    lr = S.one_cycle(T, 0.3, pct, 20.0, 1e3, anneal)
    mom = S.one_cycle_momentum(T, pct, 0.8, 0.9, anneal)
    ref = [onecycle_reference(T, 0.3, pct, 20.0, 1e3, anneal, t, 0.8, 0.9) for t in steps]
    np.testing.assert_allclose(at(lr, *steps), [r[0] for r in ref], rtol=2e-6)
    np.testing.assert_allclose(at(mom, *steps), [r[1] for r in ref], rtol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_matches_torch_onecyclelr(anneal):
    import torch

    T, top, pct = 50, 0.2, 0.3
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=top, momentum=0.9)
    torch_sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=top, total_steps=T, pct_start=pct, anneal_strategy=anneal, div_factor=25.0,
        final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95)
    lrs, moms = [], []
    for _ in range(T):
        lrs.append(torch_sched.get_last_lr()[0])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        torch_sched.step()
    np.testing.assert_allclose(at(S.one_cycle(T, top, pct, anneal=anneal), *range(T)), lrs, rtol=2e-6)
    np.testing.assert_allclose(at(S.one_cycle_momentum(T, pct, anneal=anneal), *range(T)), moms, rtol=1e-6)


def test_one_cycle_momentum_cycles_inversely():
    T = 100
    mom = S.one_cycle_momentum(T, pct_start=0.3)
    np.testing.assert_allclose(at(mom, 0, 29, T - 1), [0.95, 0.85, 0.95], rtol=REL)
    values = at(mom, *range(T))
    assert values.argmin() == 29 and values.min() == pytest.approx(0.85)


# --------------------------------------------------------------------------- SGDR


@pytest.mark.parametrize("period_mult", [1.0, 2.0, 3.0])
def test_sgdr_restarts_hit_the_decayed_peak_exactly(period_mult):
    lr, first, decay, alpha = 0.5, 10, 0.5, 0.1
    sched = S.cosine_restarts(lr, first, period_mult, peak_decay=decay, alpha=alpha)
    starts = np.cumsum([0] + [first * period_mult**i for i in range(8)]).astype(int)
    peaks = lr * decay ** np.arange(9)
    np.testing.assert_allclose(at(sched, *starts), peaks, rtol=REL)
    # The last step of period i is about alpha * peak_i (cos of pi * (P - 1) / P).
    lengths = first * period_mult ** np.arange(8)
    ends = at(sched, *(starts[1:] - 1))
    expected = peaks[:8] * (alpha + (1 - alpha) * 0.5 * (1 + np.cos(np.pi * (lengths - 1) / lengths)))
    np.testing.assert_allclose(ends, expected, rtol=1e-5)
    # ... within (1 - alpha) sin^2(pi / 2P) <= (pi / 2P)^2 of alpha * peak_i.
    assert np.all(ends >= alpha * peaks[:8])
    assert np.all(ends - alpha * peaks[:8] <= peaks[:8] * ((1 - alpha) * (np.pi / (2 * lengths)) ** 2 + 1e-6))


def test_sgdr_restarts_exact_at_large_steps_and_fractional_periods():
    # period_mult 2 from 10: restarts at 10 (2^k - 1), up to ~10^6 steps.
    big = S.cosine_restarts(1.0, 10, 2.0)
    starts = [10 * (2**k - 1) for k in range(1, 18)]
    np.testing.assert_array_equal(at(big, *starts), np.ones(len(starts)))
    lengths = np.array([10 * 2 ** (k - 1) for k in range(1, 18)])
    np.testing.assert_allclose(at(big, *(np.array(starts) - 1)), np.sin(np.pi / (2 * lengths)) ** 2, rtol=1e-4)
    # period_mult 1.5 from 4: periods 4, 6, 9, 13.5, ... -> starts 0, 4, 10, 19, 32.5.
    frac = S.cosine_restarts(1.0, 4, 1.5)
    np.testing.assert_allclose(at(frac, 4, 10, 19), [1.0, 1.0, 1.0], rtol=0)
    # Step 32 is late in period 3 (19 to 32.5), step 33 half a step into period 4 (length 20.25).
    np.testing.assert_allclose(at(frac, 32, 33), [0.5 * (1 + math.cos(math.pi * 13 / 13.5)),
                                                  0.5 * (1 + math.cos(math.pi * 0.5 / 20.25))], rtol=1e-5)


def test_sgdr_restart_on_a_whole_step_that_float_sums_miss():
    # Periods 125 * 2.2^i start at 125, 400, 1005, 2336, but the float64 sums of the periods give
    # 1005.0000000000001 and 2336.0000000000005: the restarts must still fall on steps 1005 and 2336
    # (peak), not leave those steps as the last of the previous period (about 0).
    sched = S.cosine_restarts(1.0, 125, 2.2)
    np.testing.assert_array_equal(at(sched, 125, 400, 1005, 2336), [1.0, 1.0, 1.0, 1.0])


def test_sgdr_matches_a_loop_reference():
    lr, first, mult, decay, alpha = 1.0, 3, 1.7, 0.8, 0.05
    sched = S.cosine_restarts(lr, first, mult, decay, alpha)

    def ref(t):
        start, i = 0.0, 0
        while start + first * mult**i <= t:
            start += first * mult**i
            i += 1
        peak = lr * decay**i
        return peak * (alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * (t - start) / (first * mult**i))))

    steps = list(range(0, 400, 7))
    np.testing.assert_allclose(at(sched, *steps), [ref(t) for t in steps], rtol=1e-5)


# --------------------------------------------------------------------------- cosine, step, constant, warmup


def test_cosine_and_constant():
    sched = S.cosine(100, 0.2, alpha=0.1)
    np.testing.assert_allclose(at(sched, 0, 50, 100, 150), [0.2, 0.2 * 0.55, 0.02, 0.02], rtol=REL)
    assert S.constant(0.3)(jnp.zeros(256, jnp.int32)).shape == (256,)
    np.testing.assert_allclose(at(S.constant(0.3), 0, 7), [0.3, 0.3], rtol=REL)


def test_step_multiplies_at_each_milestone():
    sched = S.step(1.0, (10, 20), factor=0.1)
    np.testing.assert_allclose(at(sched, 0, 9, 10, 19, 20, 1000), [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=REL)


def test_warmup_composition():
    base = S.cosine(100, 0.4)
    sched = S.with_warmup(base, 10)
    np.testing.assert_allclose(at(sched, 0, 5, 10, 60), [0.0, 0.2, 0.4, at(base, 50)[0]], rtol=REL)
    # Any schedule: the warmup ends at the wrapped schedule's value at its step 0.
    cyc = S.cyclical(0.1, 0.5, 10)
    warm = S.with_warmup(cyc, 4, init_lr=0.02)
    np.testing.assert_allclose(at(warm, 0, 2, 4, 14), [0.02, 0.06, 0.1, 0.5], rtol=REL)
    assert S.with_warmup(base, 0) is base


# --------------------------------------------------------------------------- build from a config


def config(**overrides):
    cfg = S.default_config()
    cfg.update(overrides)
    return cfg


EVERY_NAME = {
    "constant": {},
    "cosine": {"alpha": 0.01},
    "step": {"milestones": (0.5, 150)},
    "cyclical": {"mode": "triangular2"},
    "one_cycle": {},
    "slanted_triangular": {},
    "cosine_restarts": {"period_mult": 2.0, "peak_decay": 0.7},
}


def test_every_name_has_an_example():
    assert set(EVERY_NAME) == set(S.NAMES)


def build_example(name, warmup, T=200):
    cfg = config(name=name, warmup_steps=warmup, warmup_init_lr=1e-4, **EVERY_NAME[name])
    return cfg, S.build(cfg, total_steps=T, steps_per_epoch=20)


@pytest.mark.parametrize("name", S.NAMES)
@pytest.mark.parametrize("warmup", [0, 7])
def test_build_every_name_finite_positive(name, warmup):
    T = 200
    cfg, sched = build_example(name, warmup, T)
    values = at(sched, *range(T))
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert values.max() <= cfg.lr * (1 + 1e-6)
    if warmup:
        unwarmed = S.build(config(**dict(cfg, warmup_steps=0)), T - warmup, 20)
        assert values[0] == pytest.approx(1e-4)
        assert values[warmup] == pytest.approx(at(unwarmed, 0)[0], rel=1e-6)


def test_build_every_name_host_float64_any_step_form():
    # Schedules are host functions (the trainer precomputes them per step): float64 NumPy shaped like the
    # step, the same whether the steps come as one array, as Python ints or as NumPy / JAX scalars.
    T = 200
    schedules = [build_example(name, 7, T)[1] for name in S.NAMES]
    steps = np.arange(0, 256, 9)
    for s in schedules:
        whole = s(steps)
        assert isinstance(whole, np.ndarray) and whole.dtype == np.float64 and whole.shape == steps.shape
        one_by_one = [s(int(t)) for t in steps] + [s(np.int64(t)) for t in steps] + [s(jnp.int32(t))
                                                                                        for t in steps]
        np.testing.assert_allclose(np.reshape(one_by_one, (3, -1)), np.stack([whole] * 3), rtol=1e-12)


def test_build_uses_the_config_fields():
    T, spe = 200, 20
    # cyclical: base_lr None -> lr / 4; step_size from epochs.
    cyc = S.build(config(name="cyclical", lr=0.4, step_size_epochs=1.5), T, spe)
    np.testing.assert_allclose(at(cyc, 0, 30, 60), [0.1, 0.4, 0.1], rtol=REL)
    # step: fraction of the post-warmup length and an absolute (global) step.
    st = S.build(config(name="step", lr=1.0, warmup_steps=20, milestones=(0.5, 150)), T, spe)
    np.testing.assert_allclose(at(st, 109, 110, 149, 150), [1, 0.1, 0.1, 0.01], rtol=REL)
    # An absolute milestone past the end never fires (validation may build with a stand-in length).
    late = S.build(config(name="step", lr=1.0, milestones=(0.5, 5000)), T, spe)
    np.testing.assert_allclose(at(late, 99, 100, 199), [1, 0.1, 0.1], rtol=REL)
    # warmup from epochs, then the main schedule over the remaining steps.
    cos = S.build(config(name="cosine", lr=1.0, warmup_epochs=0.5), T, spe)
    np.testing.assert_allclose(at(cos, 0, 5, 10, 105), [0.0, 0.5, 1.0, 0.5], rtol=1e-5, atol=1e-7)
    # one cycle peaks at pct_start of the post-warmup length.
    oc = S.build(config(name="one_cycle", lr=1.0, warmup_steps=100), T, spe)
    assert at(oc, *range(T)).argmax() == 100 + 29
    # SGDR period from epochs.
    sg = S.build(config(name="cosine_restarts", lr=1.0, first_period_epochs=2.0), T, spe)
    np.testing.assert_allclose(at(sg, 0, 40, 80), [1, 1, 1], rtol=0)


def test_build_momentum():
    T = 100
    assert S.build_momentum(config(name="one_cycle"), T, 10) is None
    assert S.build_momentum(config(name="cosine", cycle_momentum=True), T, 10) is None
    mom = S.build_momentum(config(name="one_cycle", cycle_momentum=True), T, 10)
    np.testing.assert_allclose(at(mom, 0, 29, 99), [0.95, 0.85, 0.95], rtol=REL)
    warm = S.build_momentum(config(name="one_cycle", cycle_momentum=True, warmup_steps=50), T, 10)
    np.testing.assert_allclose(at(warm, 0, 49, 50, 64, 99), [0.95, 0.95, 0.95, 0.85, 0.95], rtol=REL)


def test_range_test_sets_the_bounds(tmp_path):
    path = tmp_path / "lr_range.json"
    path.write_text(json.dumps({"base_lr": 0.01, "max_lr": 0.2}))
    cyc = S.build(config(name="cyclical", range_test=str(path), step_size=10), 100, 10)
    np.testing.assert_allclose(at(cyc, 0, 10), [0.01, 0.2], rtol=REL)
    oc = S.build(config(name="one_cycle", range_test=str(path)), 100, 10)
    np.testing.assert_allclose(at(oc, 0, 29), [0.01, 0.2], rtol=1e-5)
    stlr = S.build(config(name="slanted_triangular", range_test=str(path)), 100, 10)
    np.testing.assert_allclose(at(stlr, 0, 10), [0.01, 0.2], rtol=1e-5)


def _write(tmp_path, text):
    path = tmp_path / "rt.json"
    path.write_text(text)
    return str(path)


BAD = [
    ("schedule.name", dict(name="foo")),
    ("schedule.mode", dict(name="cyclical", mode="triangle")),
    ("schedule.anneal", dict(name="one_cycle", anneal="cosine")),
    ("schedule.lr", dict(lr=0.0)),
    ("schedule.lr", dict(name="cosine", lr=-0.1)),
    ("schedule.base_lr", dict(name="cyclical", lr=0.1, base_lr=0.2)),
    ("schedule.step_size_epochs", dict(name="cyclical", step_size_epochs=0.01)),
    ("schedule.step_size", dict(name="cyclical", step_size=-1)),
    ("schedule.cut_frac", dict(name="slanted_triangular", cut_frac=1.0)),
    ("schedule.cut_frac", dict(name="slanted_triangular", cut_frac=0.0)),
    ("schedule.pct_start", dict(name="one_cycle", pct_start=0.0)),
    ("schedule.pct_start", dict(name="one_cycle", pct_start=1.5)),
    ("schedule.warmup_steps", dict(warmup_steps=100)),
    ("schedule.warmup_epochs", dict(warmup_epochs=20.0)),
    ("schedule.milestones", dict(name="step", milestones=(0.75, 0.5))),
    ("schedule.milestones", dict(name="step", milestones=(60, 0.5))),
    ("schedule.milestones", dict(name="step", milestones=(5, 50), warmup_steps=10)),
    ("schedule.first_period_epochs", dict(name="cosine_restarts", first_period_epochs=0.0)),
    ("schedule.period_mult", dict(name="cosine_restarts", period_mult=0.5)),
    ("schedule.range_test", dict(name="cyclical", range_test="/nonexistent/lr_range.json")),
    ("schedule.range_test", dict(name="cosine", range_test="RT")),
    ("schedule.range_test", dict(name="one_cycle", range_test="RT:{not json")),
    ("schedule.range_test", dict(name="one_cycle", range_test='RT:{"base_lr": 0.1}')),
    ("schedule.range_test", dict(name="cyclical", range_test='RT:{"base_lr": 0.3, "max_lr": 0.1}')),
]


@pytest.mark.parametrize("key,overrides", BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD)])
def test_bad_config_raises_config_error_naming_the_key(key, overrides, tmp_path):
    rt = overrides.get("range_test", "")
    if rt.startswith("RT"):  # a file with the given content
        overrides = dict(overrides, range_test=_write(tmp_path, rt[3:] or '{"base_lr": 0.1, "max_lr": 0.2}'))
    with pytest.raises(ConfigError) as err:
        S.build(config(**overrides), total_steps=100, steps_per_epoch=10)
    assert err.value.key == key and key in str(err.value)


def test_build_momentum_validates_too():
    with pytest.raises(ConfigError, match="schedule.max_momentum"):
        S.build_momentum(config(name="one_cycle", cycle_momentum=True, max_momentum=1.0), 100, 10)
    with pytest.raises(ConfigError, match="schedule.base_momentum"):
        S.build_momentum(config(name="one_cycle", cycle_momentum=True, base_momentum=0.99), 100, 10)
