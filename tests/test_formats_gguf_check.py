"""Hostile and malformed GGUF headers: every one is a one-line FormatError, found in milliseconds,
with no allocation proportional to a declared count (gguf-py 0.19's reader hangs on some)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from mlxquant.errors import FormatError
from mlxquant.formats.gguf_check import check_gguf
from mlxquant.formats.gguf_write import Metadata, TensorSpec, write_gguf
from mlxquant.testing.inputs import smollm2_gguf_path
from conftest import need

STRING, ARRAY, UINT32, UINT8 = 8, 9, 4, 0


def s(text: str | bytes) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def tensor_info(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + \
        struct.pack("<IQ", ggml_type, offset)


def pad(b: bytes, align: int = 32) -> bytes:
    return b + b"\0" * (-len(b) % align)


def arch_kv() -> bytes:
    return kv("general.architecture", STRING, s("llama"))


def expect(tmp_path: Path, data: bytes, match: str) -> str:
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    t0 = time.perf_counter()
    with pytest.raises(FormatError, match=match) as e:
        check_gguf(p)
    assert time.perf_counter() - t0 < 0.5
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    return msg


def valid_file(tmp_path: Path) -> Path:
    """A small valid GGUF with every value type and three tensors, written by our writer."""
    md = Metadata()
    md.set("general.architecture", "llama")
    for i, vt in enumerate((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12)):
        md.set(f"test.scalar{i}", 1 if vt != 7 else True, vt)
    md.set("test.string", "héllo")
    md.set("test.strings", ["a", "bc", ""])
    md.set("test.floats", [1.5, -2.0])
    md.set("test.nested", [[1, 2], [3]])
    specs = [TensorSpec("a.weight", "F32", (2, 8)), TensorSpec("b.weight", "F16", (3, 32)),
             TensorSpec("c.weight", "Q8_0", (2, 64))]
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((2, 8)).astype(np.float32),
            rng.standard_normal((3, 32)).astype(np.float16), rng.integers(0, 255, (2, 68), np.uint8)]
    out = tmp_path / "ok.gguf"
    write_gguf(out, md, specs, iter(data))
    return out


def test_valid_file_parses(tmp_path):
    h = check_gguf(valid_file(tmp_path))
    assert h.metadata["test.string"] == "héllo"
    assert h.metadata["test.strings"] == ["a", "bc", ""]
    assert h.metadata["test.nested"] == [[1, 2], [3]]
    assert h.metadata["test.scalar7"] is True
    assert [t.name for t in h.tensors] == ["a.weight", "b.weight", "c.weight"]
    assert [t.shape for t in h.tensors] == [(2, 8), (3, 32), (2, 64)]
    assert all(t.offset % 32 == 0 for t in h.tensors)


def test_every_truncation_is_a_format_error(tmp_path):
    path = valid_file(tmp_path)
    data = path.read_bytes()
    end = max(t.offset + t.nbytes for t in check_gguf(path).tensors)  # then only padding
    p = tmp_path / "cut.gguf"
    for n in list(range(0, 400)) + list(range(400, end, 7)) + [end - 1]:
        p.write_bytes(data[:n])
        with pytest.raises(FormatError):
            check_gguf(p)


def test_random_corruption_never_escapes_as_another_error(tmp_path):
    data = bytearray(valid_file(tmp_path).read_bytes())
    rng = np.random.default_rng(1)
    p = tmp_path / "flip.gguf"
    for _ in range(300):
        d = bytearray(data)
        for i in rng.integers(0, 400, 3):
            d[i] = int(rng.integers(0, 256))
        p.write_bytes(bytes(d))
        try:
            check_gguf(p)
        except FormatError:
            pass


def test_49_byte_file_with_2_63_array_fails_fast(tmp_path):
    data = header(0, 1) + s("k") + struct.pack("<IIQ", ARRAY, UINT8, 1 << 63)
    assert len(data) == 49
    expect(tmp_path, data, "exceeds the limit")


@pytest.mark.parametrize("count,item", [(1 << 62, STRING), (1 << 29, STRING), (1 << 28, UINT32),
                                        (1 << 29, ARRAY)])
def test_hostile_array_counts(tmp_path, count, item):
    data = header(0, 1) + s("k") + struct.pack("<IIQ", ARRAY, item, count) + b"\0" * 64
    expect(tmp_path, data, "array of")


def test_hostile_string_lengths(tmp_path):
    expect(tmp_path, header(0, 1) + s("k") + struct.pack("<IQ", STRING, 1 << 62), "exceeds the limit")
    expect(tmp_path, header(0, 1) + s("k") + struct.pack("<IQ", STRING, 1000) + b"x" * 10, "truncated")
    expect(tmp_path, header(0, 1) + struct.pack("<Q", 1 << 40) + b"k" * 32, "key 0")
    strings = struct.pack("<IIQ", ARRAY, STRING, 2) + s("ok") + struct.pack("<Q", 500) + b"abc"
    expect(tmp_path, header(0, 1) + s("k") + strings, r"k'\)\[1\].*truncated|truncated")


@pytest.mark.parametrize("n_tensors,n_kv", [(1 << 60, 0), (0, 1 << 60), (1000, 0), (0, 100)])
def test_hostile_counts(tmp_path, n_tensors, n_kv):
    expect(tmp_path, header(n_tensors, n_kv) + b"\0" * 64, "cannot fit")


def test_header_problems(tmp_path):
    expect(tmp_path, b"", "too short")
    expect(tmp_path, b"GGML" + b"\0" * 40, "not a GGUF file")
    expect(tmp_path, header(0, 0, version=1), "version 1")
    expect(tmp_path, header(0, 0, version=7), "unsupported GGUF version 7")
    expect(tmp_path, b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian")


def test_key_value_problems(tmp_path):
    expect(tmp_path, header(0, 1) + kv("k", 13, b"\0" * 8), "unknown value type 13")
    expect(tmp_path, header(0, 1) + s("k") + struct.pack("<IIQ", ARRAY, 99, 1) + b"\0" * 8,
           "unknown array item type 99")
    expect(tmp_path, header(0, 2) + kv("k", UINT32, b"\0" * 4) * 2, "duplicate key 'k'")
    expect(tmp_path, header(0, 1) + kv("", UINT32, b"\0" * 4), "key 0 is empty")
    nested = s("k") + struct.pack("<I", ARRAY) + struct.pack("<IQ", ARRAY, 1) * 10 + \
        struct.pack("<IQ", UINT8, 1) + b"\0" * 8
    expect(tmp_path, header(0, 1) + nested, "nested deeper")
    expect(tmp_path, header(0, 1) + kv("general.alignment", UINT32, struct.pack("<I", 48)),
           "not a power of two")
    expect(tmp_path, header(0, 1) + kv("general.alignment", 10, struct.pack("<Q", 32)),
           "must be a UINT32")


def test_tensor_problems(tmp_path):
    def one(info: bytes, data_len: int = 64, n: int = 1) -> bytes:
        return pad(header(n, 1) + arch_kv() + info) + b"\0" * data_len

    expect(tmp_path, one(tensor_info("t", [8, 1, 1, 1, 1], 0, 0)), "5 dimensions")
    expect(tmp_path, one(tensor_info("t", [8], 4, 0)), "unknown GGML type id 4")
    expect(tmp_path, one(tensor_info("t", [1 << 40, 1 << 40], 0, 0)), "overflows")
    expect(tmp_path, one(tensor_info("t", [1 << 63], 0, 0)), "negative or too large")
    expect(tmp_path, one(tensor_info("t", [48], 2, 0)), "not a multiple of the Q4_0 block size 32")
    expect(tmp_path, one(tensor_info("t", [8], 0, 16)), "not a multiple of 32")
    expect(tmp_path, one(tensor_info("t", [8], 0, 1 << 40)), "past the end")
    expect(tmp_path, one(tensor_info("t", [64], 0, 0), data_len=100), "past the end")
    expect(tmp_path, one(tensor_info("x" * 64, [8], 0, 0)), "exceeds the limit of 63")
    two = tensor_info("t", [16], 0, 0) + tensor_info("t", [8], 0, 64)
    expect(tmp_path, one(two, 128, n=2), "duplicate tensor name")
    two = tensor_info("t", [16], 0, 0) + tensor_info("u", [8], 0, 32)
    expect(tmp_path, one(two, 128, n=2), "overlap")


def test_smollm2_header_matches_gguf_py_and_is_fast():
    p = smollm2_gguf_path()
    need(p is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    check_gguf(p)
    t0 = time.perf_counter()
    h = check_gguf(p)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, f"header check of a 98 MB file took {elapsed:.3f} s"
    from gguf import GGUFReader

    r = GGUFReader(p)
    for key, field in r.fields.items():
        if not key.startswith("GGUF."):
            assert h.metadata[key] == field.contents(), key
            assert int(h.value_types[key].type) == int(field.types[0]), key
    assert [(t.name, t.offset, t.nbytes) for t in h.tensors] == \
        [(t.name, int(t.data_offset), int(t.n_bytes)) for t in r.tensors]
