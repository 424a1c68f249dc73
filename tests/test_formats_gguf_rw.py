"""GGUF reading and streaming writing: round trips, byte-identical copies, atomic outputs."""

from __future__ import annotations

import errno
import filecmp

import numpy as np
import pytest

from mlxquant import dequantize, quantize
from mlxquant.errors import FormatError, OutputExistsError, QuantInputError, UnsafeOutputError
from mlxquant.formats.gguf_read import GGUFModel
from mlxquant.formats.gguf_write import Metadata, TensorSpec, write_gguf
from mlxquant.testing.inputs import smollm2_gguf_path
from conftest import need


def small_model(rng: np.random.Generator) -> tuple[Metadata, list[TensorSpec], list[np.ndarray]]:
    md = Metadata()
    md.set("general.architecture", "llama")
    md.set("llama.block_count", 1)
    md.set("llama.attention.layer_norm_rms_epsilon", 1e-5)
    md.set("tokenizer.ggml.tokens", ["a", "b"])
    md.set("tokenizer.ggml.token_type", [1, 3])
    md.set("tokenizer.ggml.scores", [0.0, -1.0])
    md.set("general.flag", True)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    specs = [TensorSpec("norm.weight", "F32", (64,)), TensorSpec("w.weight", "Q8_0", (4, 64)),
             TensorSpec("h.weight", "F16", (2, 3, 32))]
    data = [x[0], quantize(x, "Q8_0"), x[:3].reshape(2, 3, 32).astype(np.float16)]
    return md, specs, data


def test_round_trip_values_types_and_tensors(tmp_path):
    rng = np.random.default_rng(0)
    md, specs, data = small_model(rng)
    out = write_gguf(tmp_path / "m.gguf", md, specs, iter(data))
    with GGUFModel(out) as g:
        assert g.architecture == "llama"
        assert g.metadata["llama.block_count"] == 1
        assert g.value_types["llama.block_count"].type.name == "UINT32"
        assert g.value_types["llama.attention.layer_norm_rms_epsilon"].type.name == "FLOAT32"
        assert g.value_types["tokenizer.ggml.token_type"].item.name == "INT32"
        assert g.value_types["tokenizer.ggml.scores"].item.name == "FLOAT32"
        assert g.metadata["general.flag"] is True
        assert [(t.name, t.type, t.shape) for t in g.tensors] == [(s.name, s.type, s.shape) for s in specs]
        np.testing.assert_array_equal(g.tensor("norm.weight"), data[0])
        np.testing.assert_array_equal(g.raw("w.weight").reshape(-1), data[1].reshape(-1))
        np.testing.assert_array_equal(g.tensor("w.weight"), dequantize(data[1], "Q8_0", (4, 64)))
        np.testing.assert_array_equal(g.tensor("h.weight"), data[2].astype(np.float32))
    # gguf-py's reader agrees on everything
    from gguf import GGUFReader

    r = GGUFReader(out)
    assert [t.name for t in r.tensors] == [s.name for s in specs]
    assert r.fields["tokenizer.ggml.tokens"].contents() == ["a", "b"]


def test_streaming_asks_for_one_tensor_at_a_time_after_the_header(tmp_path):
    rng = np.random.default_rng(1)
    md, specs, data = small_model(rng)
    calls = []
    out = tmp_path / "s.gguf"

    def produce(spec):
        partial = list(tmp_path.glob(".s.gguf.*.partial"))
        assert len(partial) == 1 and partial[0].stat().st_size > 0  # header already on disk
        assert not out.exists()
        calls.append(spec.name)
        return data[len(calls) - 1]

    done = []
    write_gguf(out, md, specs, produce, progress=lambda s: done.append(s.name))
    assert calls == done == [s.name for s in specs]
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(),
                                 OSError(errno.ENOSPC, "No space left on device")])
def test_failure_leaves_nothing(tmp_path, exc):
    rng = np.random.default_rng(2)
    md, specs, data = small_model(rng)

    def produce(spec):
        if spec.name == "h.weight":
            raise exc
        return data[[s.name for s in specs].index(spec.name)]

    with pytest.raises(type(exc)):
        write_gguf(tmp_path / "f.gguf", md, specs, produce)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path):
    rng = np.random.default_rng(3)
    md, specs, data = small_model(rng)
    out = tmp_path / "e.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_gguf(out, md, specs, iter(data))
    assert out.read_bytes() == b"keep me"
    with pytest.raises(UnsafeOutputError, match="not a GGUF file mlxquant wrote"):
        write_gguf(out, md, specs, iter(data), force=True)  # force replaces only mlxquant's outputs
    assert out.read_bytes() == b"keep me"
    out.unlink()
    md.set("mlxquant.version", "0.1.0")
    write_gguf(out, md, specs, iter(data))
    write_gguf(out, md, specs, iter(data), force=True)
    assert GGUFModel(out).tensors[1].name == "w.weight"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.gguf"]


def test_bad_sizes_and_shapes(tmp_path):
    rng = np.random.default_rng(4)
    md, specs, data = small_model(rng)
    with pytest.raises(FormatError, match="'w.weight'.*expected 272"):
        write_gguf(tmp_path / "b.gguf", md, specs, iter([data[0], data[1][:, :-1], data[2]]))
    with pytest.raises(QuantInputError, match="Q4_K needs rows that are a multiple of 256"):
        write_gguf(tmp_path / "b.gguf", md, [TensorSpec("x", "Q4_K", (4, 576))], iter([]))
    assert list(tmp_path.iterdir()) == []


def test_smollm2_copy_is_byte_identical(tmp_path):
    p = smollm2_gguf_path()
    need(p is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    with GGUFModel(p) as g:
        md = Metadata()
        for k, v in g.metadata.items():
            md.set(k, v, g.value_types[k])
        specs = [TensorSpec(t.name, t.type, t.shape) for t in g.tensors]
        write_gguf(tmp_path / "copy.gguf", md, specs, lambda s: g.raw(s.name))
    assert filecmp.cmp(p, tmp_path / "copy.gguf", shallow=False)


def test_smollm2_tensors_decode_like_gguf_py():
    """Offsets are checked against gguf-py's reader in test_formats_gguf_check; here the decode."""
    p = smollm2_gguf_path()
    need(p is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gg_dequantize

    with GGUFModel(p) as g:
        for name in ("blk.0.ffn_down.weight", "blk.0.attn_k.weight", "blk.0.attn_norm.weight"):
            t = g.info(name)
            ref = gg_dequantize(np.asarray(g.raw(name)), GGMLQuantizationType(t.qtype.id))
            np.testing.assert_array_equal(g.tensor(name), ref.astype(np.float32).reshape(t.shape))
        raw = g.raw("token_embd.weight")
        assert raw.dtype == np.uint8 and raw.shape == (49152, 612)
