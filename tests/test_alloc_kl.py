"""The gain meter's KL (mlxquant.alloc.kl) against the textbook float64 formula."""

import numpy as np
import pytest

from mlxquant.alloc.kl import Reference


def _textbook(ref: np.ndarray, q: np.ndarray) -> np.ndarray:
    a, b = ref.astype(np.float64), q.astype(np.float64)
    la = a - a.max(-1, keepdims=True)
    la -= np.log(np.exp(la).sum(-1, keepdims=True))
    lb = b - b.max(-1, keepdims=True)
    lb -= np.log(np.exp(lb).sum(-1, keepdims=True))
    return (np.exp(la) * (la - lb)).sum(-1)


@pytest.mark.parametrize("scale", [1e-4, 1e-3, 3e-2, 0.2, 3.0])
def test_kl_matches_float64(scale):
    """Small changes (the series path), large ones (float64 expm1) and rows of both kinds in one
    call: within 1e-6 relative of float64 log-softmaxes, never negative."""
    rng = np.random.default_rng(int(scale * 1e4))
    ref = (rng.standard_normal((24, 4096)) * 4).astype(np.float32)
    noise = rng.standard_normal(ref.shape) * scale
    noise[::5] *= 50  # some rows far past the series' range
    noise[1, 7] = 1.0  # one element past it in an otherwise small row
    q = (ref + noise).astype(np.float32)
    k = Reference(ref).kl(q)
    ex = _textbook(ref, q)
    assert k.shape == (24,) and k.dtype == np.float64
    assert np.all(k >= 0)
    np.testing.assert_allclose(k, ex, rtol=1e-6, atol=1e-12)


def test_kl_tiny_divergence_no_cancellation():
    """KL of ~1e-9 nats from logits of ~10 (what one finely quantized tensor gives): float64
    accuracy, where a float32 log-softmax difference would be all rounding."""
    rng = np.random.default_rng(3)
    ref = (rng.standard_normal((8, 8192)) * 3 + 10).astype(np.float32)
    q = (ref + rng.standard_normal(ref.shape).astype(np.float32) * np.float32(1e-4)).astype(np.float32)
    k = Reference(ref).kl(q)
    ex = _textbook(ref, q)
    assert 1e-10 < ex.mean() < 1e-7
    np.testing.assert_allclose(k, ex, rtol=1e-5)


def test_kl_identical_and_shifted_logits_are_zero():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((4, 1000)).astype(np.float32)
    R = Reference(ref)
    assert np.all(R.kl(ref) == 0)
    assert np.all(np.abs(R.kl(ref + np.float32(0.0625))) < 1e-12)  # softmax is shift-invariant


def test_kl_nonfinite_logits_propagate_and_shape_checked():
    ref = np.zeros((2, 64), np.float32)
    q = ref.copy()
    q[1, 3] = np.nan
    k = Reference(ref).kl(q)
    assert k[0] == 0 and np.isnan(k[1])
    with pytest.raises(ValueError, match="shape"):
        Reference(ref).kl(np.zeros((2, 63), np.float32))


@pytest.mark.parametrize("chunks", [1, 3])
def test_gain_meter_same_kl_on_one_or_more_threads(shakespeare, calib_file, monkeypatch, chunks):
    """The gain meter's windows run side by side on threads (in batches of one per core): the
    mean KL equals the one computed window after window on one thread (BLAS thread counts change
    only the last bits), for a window count that fills the batches and one that does not."""
    import mlxquant.runtime.blas as blas
    from mlxquant.alloc.api import calibration_windows
    from mlxquant.alloc.costs import GainMeter
    from mlxquant.runtime.backend import load_model

    m = load_model(shakespeare, backend="numpy")
    meter = GainMeter(m, calibration_windows(m, calib_file, 64, chunks))
    name = "model.layers.2.mlp.down_proj.weight"
    w = m.weights.get(name)
    noisy = (w + np.random.default_rng(0).standard_normal(w.shape).astype(np.float32) * 0.02 * w.std())
    monkeypatch.setattr(blas, "cpu_cores", lambda: 2)
    threaded = meter.kl(name, noisy, 2)
    monkeypatch.setattr(blas, "cpu_cores", lambda: 1)
    single = meter.kl(name, noisy, 2)
    assert threaded > 0 and abs(threaded - single) <= 1e-3 * single  # BLAS counts: last bits
    assert np.array_equal(m.weights.get(name), w)  # the swap is undone
