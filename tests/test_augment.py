import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tl_research.data import augment
from tl_research.core.errors import ConfigError

KEY = jax.random.key(0)
# jitted once per op list: eager dispatch of every small op would dominate the test time
run = jax.jit(augment.apply, static_argnums=0)


def _batch(b=6, h=8, w=8, c=3, k=6):
    # numpy inputs: building them with eager jax ops would compile a kernel for each
    images = np.arange(b * h * w * c, dtype=np.float32).reshape(b, h, w, c) / (b * h * w * c) + 0.5
    targets = np.eye(k, dtype=np.float32)[np.arange(b) % k]
    return images, targets


def test_parse_fills_defaults_and_rejects_bad_ops_naming_the_key():
    ops = augment.parse(("flip", "rotate(30)", "rrc(0.2)", "crop( 2 )", "mixup(0.4)"))
    assert [(o.name, o.args) for o in ops] == [("flip", (0.5,)), ("rotate", (30.0,)), ("rrc", (0.2, 1.0)),
                                             ("crop", (2.0,)), ("mixup", (0.4,))]
    for bad in ("flop", "rotate(x)", "rotate(200)", "crop(1.5)", "flip(0.5, 1)", "mixup(0)", "zoom(nan)", ""):
        with pytest.raises(ConfigError, match=r"config\.augment"):
            augment.parse((bad,))


def test_flip_mirrors_exactly():
    # with p = 0.5 each example is either untouched or exactly mirrored, and both happen
    images, targets = _batch(b=32)
    out, t = run(("flip",), images, targets, KEY)
    np.testing.assert_array_equal(t, targets)
    mirrored = [bool(np.array_equal(o, r[:, ::-1])) for o, r in zip(np.asarray(out), np.asarray(images))]
    kept = [bool(np.array_equal(o, r)) for o, r in zip(np.asarray(out), np.asarray(images))]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def _shifted(image, dr, dc):
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    out[max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] = \
        image[max(-dr, 0):h + min(-dr, 0), max(-dc, 0):w + min(-dc, 0)]
    return out


@pytest.mark.parametrize("op, limit", [("translate(0.25)", 2), ("crop(2)", 2)])
def test_whole_pixel_shifts_are_exact(op, limit):
    images, targets = _batch(b=16)
    out, _ = run((op,), images, targets, KEY)
    shifts = set()
    for o, im in zip(np.asarray(out), np.asarray(images)):
        found = [(dr, dc) for dr in range(-limit, limit + 1) for dc in range(-limit, limit + 1)
                 if np.array_equal(o, _shifted(im, dr, dc))]
        assert len(found) == 1, found  # exactly a shift by whole pixels, zeros shifted in
        shifts.add(found[0])
    assert len(shifts) > 3


def test_sampler_conventions_rotation_and_shift():
    image = np.asarray(_batch(b=1, h=7, w=7)[0][0])
    warp = jax.jit(augment.warp)
    np.testing.assert_allclose(warp(image, augment.rotation_matrix(90.0, 7, 7)), np.rot90(image),
                               atol=1e-5)  # counter-clockwise as displayed
    np.testing.assert_array_equal(warp(image, augment.shift_matrix(1.0, -2.0)), _shifted(image, 1, -2))


def test_random_resized_crop_stays_inside_the_image():
    ones = np.ones((16, 9, 12, 3), np.float32)
    out, _ = run(("rrc(0.1)",), ones, np.eye(2, dtype=np.float32)[np.zeros(16, int)], KEY)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)  # no zeros from outside the image are ever read


def test_jitter_is_an_affine_change_of_each_image():
    images, targets = _batch(b=4, c=1)
    out, _ = run(("jitter(0.5)",), images, targets, KEY)
    for o, im in zip(np.asarray(out), np.asarray(images)):
        a, b = np.polyfit(im.ravel(), o.ravel(), 1)
        np.testing.assert_allclose(o, a * im + b, atol=1e-5)
        assert 0.5 <= a <= 1.5 and not np.allclose(o, im)


def test_mixup_mixes_images_and_targets_alike_and_preserves_target_sums():
    images, targets = _batch(b=6, k=6)  # one class per example, so the targets reveal the mixing
    out, t = run(("mixup(1.0)",), images, targets, KEY)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)
    t, out, images = np.asarray(t), np.asarray(out), np.asarray(images)
    partners = set()
    for i in range(6):
        others = [j for j in np.flatnonzero(t[i] > 1e-7) if j != i]
        j = others[0] if others else i  # its partner in the permuted batch
        partners.add(j)
        np.testing.assert_allclose(out[i], t[i, i] * images[i] + (1 - t[i, i]) * images[j], atol=1e-5)
    assert len(partners) == 6  # a permutation: every example is some example's partner


def test_mixup_coefficient_is_beta_distributed():
    alpha = 0.4
    lam = np.asarray(jax.jit(jax.vmap(lambda k: augment.beta_symmetric(k, alpha)))(
        jax.random.split(KEY, 20000)))
    assert 0 <= lam.min() and lam.max() <= 1
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.03)  # variance of Beta(a, a)


# per-example geometric ops composed into one warp, a pixel op, and the batch-level mixup (the one op whose
# examples cross device boundaries); all geometric ops share the sampler and the per-example draws
OPS = ("flip", "rotate(15)", "crop(4)", "jitter(0.2)", "mixup(0.2)")


def _inputs():
    rng = np.random.default_rng(11)
    return rng.normal(size=(16, 12, 12, 3)).astype(np.float32), np.eye(5, dtype=np.float32)[np.arange(16) % 5]


def test_deterministic_per_key_and_identical_on_one_and_eight_devices(tmp_path):
    script = textwrap.dedent(f"""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from tl_research.data import augment
        assert jax.device_count() == 8
        rng = np.random.default_rng(11)
        x = rng.normal(size=(16, 12, 12, 3)).astype(np.float32)
        t = np.eye(5, dtype=np.float32)[np.arange(16) % 5]
        mesh = Mesh(np.array(jax.devices()), ("data",))
        data, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
        fn = jax.jit(lambda x, t, k: augment.apply({OPS!r}, x, t, k),
                     in_shardings=(data, data, rep), out_shardings=(data, data))
        y, u = fn(jax.device_put(x, data), jax.device_put(t, data), jax.random.key(5))
        assert len(y.sharding.device_set) == 8
        np.savez({str(tmp_path / "eight.npz")!r}, y=np.asarray(y), u=np.asarray(u))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    child = subprocess.Popen([sys.executable, "-c", script], env=env)  # runs while this process compiles
    x, t = _inputs()
    y, u = run(OPS, x, t, jax.random.key(5))
    y2, u2 = run(OPS, x, t, jax.random.key(5))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(u, u2)
    y3, _ = run(OPS, x, t, jax.random.key(6))
    assert not np.allclose(y, y3)
    assert child.wait(timeout=240) == 0
    eight = np.load(tmp_path / "eight.npz")
    np.testing.assert_allclose(eight["y"], y, atol=1e-5)
    np.testing.assert_allclose(eight["u"], u, atol=1e-6)
