"""mlxquant imatrix on MLX (``backend="mlx"``: taps on mlx-lm's linear layers) against the NumPy
runtime, on the float base model: every tensor's sums within cosine 0.99999 and 1e-3 relative error
(entries above 1e-6 x the tensor's max), counts equal, perplexities within 1e-4; from the HF
folder (MLX float32 on a CPU), from its F32 GGUF (through a temporary HF folder, removed after) and
from an 8-bit MLX folder (``QuantizedLinear``), and with chunks longer than llama.cpp's 512-token
batch (a last batch under 16 tokens is not collected by either)."""

from __future__ import annotations

import numpy as np
import pytest

from mlxquant.calib import ImatrixStats, imatrix


pytest.importorskip("mlx_lm")


def assert_close(a: ImatrixStats, b: ImatrixStats) -> tuple[float, float]:
    """The acceptance bounds; returns (1 - worst cosine, worst relative error)."""
    assert sorted(a.tensors) == sorted(b.tensors)
    worst_cos, worst_rel = 1.0, 0.0
    for name, t in a.tensors.items():
        u = b.tensors[name]
        assert u.count == t.count, name
        x, y = t.in_sum2.astype(np.float64), u.in_sum2.astype(np.float64)
        cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
        big = x > 1e-6 * x.max()
        rel = float(np.max(np.abs(x[big] - y[big]) / x[big]))
        assert cos >= 0.99999 and rel <= 1e-3, (name, cos, rel)
        worst_cos, worst_rel = min(worst_cos, cos), max(worst_rel, rel)
    return 1 - worst_cos, worst_rel


def test_mlx_matches_numpy_on_the_float_model(shakespeare, calib_file, tmp_path):
    from mlxquant.testing.f32_gguf import shakespeare_f32_gguf

    ref = imatrix(shakespeare, calib_file, ctx=64, chunks=3)
    r = imatrix(shakespeare, calib_file, tmp_path / "im.gguf", ctx=64, chunks=3, backend="mlx")
    assert r.backend == "mlx" and r.chunks == 3 and len(r.stats.tensors) == 42
    assert all(t.count == 192 for t in r.stats.tensors.values())
    assert np.allclose(r.ppl_per_chunk, ref.ppl_per_chunk, rtol=1e-4)
    assert_close(ref.stats, r.stats)
    for i in range(6):  # shared inputs: the same sums, as on the NumPy path
        assert np.array_equal(r.stats.tensors[f"blk.{i}.attn_q.weight"].in_sum2,
                              r.stats.tensors[f"blk.{i}.attn_k.weight"].in_sum2)
    # the model's F32 GGUF: NumPy runs it directly, MLX through a temporary float32 HF folder
    gguf = shakespeare_f32_gguf(tmp_path / "f32.gguf")
    g = imatrix(gguf, calib_file, ctx=64, chunks=3)
    assert_close(g.stats, r.stats)
    before = set(tmp_path.iterdir())
    gm = imatrix(gguf, calib_file, ctx=64, chunks=3, backend="mlx")
    assert gm.model == str(gguf) and gm.ppl_per_chunk == r.ppl_per_chunk
    assert_close(g.stats, gm.stats)
    assert set(tmp_path.iterdir()) == before


def test_mlx_quantized_folder_and_long_chunks(shakespeare, calib_file, tmp_path):
    from mlxquant.convert import MLXOptions, convert

    q8 = tmp_path / "q8"
    convert(shakespeare, q8, MLXOptions(q_bits=8, q_group_size=64))
    a = imatrix(q8, calib_file, ctx=64, chunks=2)  # NumPy runs the dequantized weights
    b = imatrix(q8, calib_file, ctx=64, chunks=2, backend="mlx")  # QuantizedLinear taps
    assert_close(a.stats, b.stats)
    # 520-token chunks: batches of 512 + 8 tokens; the 8-token batch is not collected
    a = imatrix(shakespeare, calib_file, ctx=520, chunks=2)
    b = imatrix(shakespeare, calib_file, ctx=520, chunks=2, backend="mlx")
    assert all(t.count == 2 * 512 for t in b.stats.tensors.values())
    assert np.allclose(a.ppl_per_chunk, b.ppl_per_chunk, rtol=1e-4)
    assert_close(a.stats, b.stats)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma2", "gemma3", "gemma3-vlm"])
def test_mlx_matches_numpy_on_every_architecture(arch, shakespeare, calib_file, tmp_path):
    """A small random model of each other architecture (the float base model's tokenizer, its
    vocabulary size), and Gemma 3's multimodal layout (``language_model.`` in mlx-lm's module
    paths and in the checkpoint): the taps find every tensor the NumPy runtime's observer reports,
    under the same GGUF names, and the sums agree (qwen2's biases, qwen3's q/k norms, gemma's sandwich norms
    and scaled embeddings all sit between the activations and the statistics)."""
    import shutil

    from mlxquant.formats.hf import HFTensorSpec, write_hf_folder
    from mlxquant.testing.f32_gguf import tiny_hf_model

    cfg, tensors = tiny_hf_model(arch.removesuffix("-vlm"), seed=5, vocab_size=4096,
                                 num_hidden_layers=6)  # gemma3: a whole period of 5 sliding-window
    # layers and a global one (mlx-lm indexes its cache by it)
    if arch == "gemma3-vlm":  # Gemma3ForConditionalGeneration: text model under language_model.
        text = {k: v for k, v in cfg.items() if k != "architectures"}
        cfg = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
               "text_config": {**text, "model_type": "gemma3_text"}, "vocab_size": 4096,
               "vision_config": {"model_type": "siglip_vision_model"}}
        tensors = {f"language_model.{k}": v for k, v in tensors.items()}
    folder = tmp_path / arch
    write_hf_folder(folder, cfg, [HFTensorSpec(n, a.shape, "F32") for n, a in tensors.items()],
                    lambda s: tensors[s.name])
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(shakespeare / f, folder / f)
    a = imatrix(folder, calib_file, ctx=64, chunks=2)
    b = imatrix(folder, calib_file, ctx=64, chunks=2, backend="mlx")
    assert len(a.stats.tensors) == 6 * 7
    assert np.allclose(a.ppl_per_chunk, b.ppl_per_chunk, rtol=1e-4)
    assert_close(a.stats, b.stats)
