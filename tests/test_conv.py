"""The CPU forms of tl_research.models.conv equal XLA's convolution, values and gradients, where they apply,
and apply only where they are meant to."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from tl_research.models import conv

# (batch, size, c_in, c_out, kernel, stride, padding, groups, the form expected)
CASES = [
    (4, 2, 32, 48, 3, 1, "SAME", 1, "patches"),          # ResNet's last stage at 64 px
    (4, 4, 16, 32, 3, 2, ((1, 1), (1, 1)), 1, "patches"),  # strided into a 2x2 map
    (3, 3, 8, 8, 3, 1, "VALID", 1, "patches"),            # a single output position
    (4, 5, 24, 24, 3, 1, "SAME", 24, "taps"),             # depthwise
    (2, 9, 16, 16, 5, 2, "SAME", 16, "taps"),             # depthwise, strided, odd size (asymmetric pads)
    (2, 6, 12, 12, 3, 2, ((0, 1), (0, 1)), 12, "taps"),   # depthwise with Keras-style correct padding
    (4, 8, 8, 16, 3, 1, "SAME", 1, None),                 # a dense map stays XLA's
    (4, 2, 32, 48, 1, 1, "SAME", 1, None),                # 1x1: already a matrix product
    (4, 4, 8, 16, 3, 1, "SAME", 2, None),                 # grouped, not depthwise
]


def _conv(fn, padding, stride, groups):
    return lambda x, w: fn(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                           feature_group_count=groups)


@pytest.mark.parametrize("b,size,c_in,c_out,k,stride,padding,groups,expected", CASES)
def test_the_cpu_forms_equal_xla_values_and_gradients(b, size, c_in, c_out, k, stride, padding, groups, expected):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(b, size, size, c_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, c_in // groups, c_out)) * 0.2, jnp.float32)
    chosen = conv.form(x, w, (stride, stride), padding, None, None, ("NHWC", "HWIO", "NHWC"), groups)
    assert (chosen and chosen[0]) == expected
    ours, xla = _conv(conv.conv_general_dilated, padding, stride, groups), _conv(lax.conv_general_dilated,
                                                                                 padding, stride, groups)
    cot = jnp.asarray(rng.normal(size=jax.eval_shape(xla, x, w).shape), jnp.float32)

    def loss(f):
        return lambda x, w: jnp.sum(f(x, w) * cot)
    np.testing.assert_allclose(jax.jit(ours)(x, w), xla(x, w), rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.jit(jax.grad(loss(ours), (0, 1)))(x, w), jax.grad(loss(xla), (0, 1))(x, w)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_environment_switch_and_other_backends_keep_xla_convolutions(monkeypatch):
    x, w = jnp.ones((2, 2, 2, 8)), jnp.ones((3, 3, 8, 8))
    args = (x, w, (1, 1), "SAME", None, None, ("NHWC", "HWIO", "NHWC"), 1)
    assert conv.form(*args)[0] == "patches"
    monkeypatch.setenv(conv.ENV, "xla")
    assert conv.form(*args) is None
    monkeypatch.delenv(conv.ENV)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert conv.form(*args) is None


def test_conv_is_nnx_conv_with_the_same_parameters_and_output():
    ours = conv.Conv(16, 16, (3, 3), feature_group_count=16, rngs=nnx.Rngs(0))
    theirs = nnx.Conv(16, 16, (3, 3), feature_group_count=16, rngs=nnx.Rngs(0))
    assert isinstance(ours, nnx.Conv)
    assert jax.tree.structure(nnx.state(ours)) == jax.tree.structure(nnx.state(theirs))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 7, 7, 16)), jnp.float32)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_in,c_out,groups", [(64, 64, 1), (64, 64, 64)])
def test_bfloat16_forms_sum_in_float32_as_xla_does(c_in, c_out, groups):
    """bfloat16 compute: the patch and tap forms return bfloat16 sums accumulated in float32, as close to the
    float32 result as XLA's own bfloat16 convolution is."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(4, 2, 2, c_in)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(3, 3, c_in // groups, c_out)) * 0.1, jnp.bfloat16)
    assert conv.form(x, w, (1, 1), "SAME", None, None, ("NHWC", "HWIO", "NHWC"), groups) is not None
    ours, xla = _conv(conv.conv_general_dilated, "SAME", 1, groups), _conv(lax.conv_general_dilated, "SAME", 1,
                                                                         groups)
    exact = xla(x.astype(jnp.float32), w.astype(jnp.float32))
    got, theirs = jax.jit(ours)(x, w), xla(x, w)
    assert got.dtype == jnp.bfloat16
    ours_err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - exact)))
    xla_err = float(jnp.max(jnp.abs(theirs.astype(jnp.float32) - exact)))
    assert ours_err <= 1.5 * xla_err + 1e-6, (ours_err, xla_err)
