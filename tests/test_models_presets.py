"""``plan_tensor_types`` against llama.cpp's own ``llama_model_quantize`` (llama-cpp-python 0.3.36).

Float32 GGUFs are written with :mod:`mlxquant.testing.f32_gguf` (our name maps and permutation),
quantized by llama.cpp, and the per-tensor types of its output, read with gguf-py's GGUFReader,
must equal our plan exactly.

- tiny-shakespeare-llama (hidden 256, tied): every preset, real quantization;
- SmolLM2-135M (hidden 576, tied: the row-size fallbacks): every preset through llama.cpp's
  ``dry_run`` (the same type choice, read from its log, 0.1 s per preset instead of 1-60 s), and
  real quantization for Q4_K_M and Q2_K, which also checks that the log reading equals the file;
  ``MLXQUANT_FULL_ORACLE=1`` quantizes every preset for real (measured: all equal);
- tiny random models of every architecture (untied ones have an ``output.weight``; GQA 4 and 80
  layers switch on more rules), with and without an importance matrix, llama.cpp's other
  mixtures (IQ2_XXS, IQ3_M, Q2_K_S, ...) and single types (``--pure``): dry runs.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from pathlib import Path

import pytest
from gguf import GGUFReader

from mlxquant.errors import ImatrixRequiredError, QuantTypeError
from mlxquant.models import ALL_PRESETS, PRESETS, plan_tensor_types, preset_file_type
from mlxquant.testing.f32_gguf import shakespeare_f32_gguf, smollm2_f32_gguf, tiny_hf_model, write_f32_gguf
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path

from conftest import need

try:
    import llama_cpp
except ImportError:  # the oracle is missing: every test below skips locally, fails on CI
    llama_cpp = None


@pytest.fixture(autouse=True)
def _oracle_installed():
    need(llama_cpp is not None, "llama-cpp-python (the llama.cpp oracle)")

# "[  12/ 272] blk.0.attn_q.weight - [ 576, 576, 1, 1], type = f32, size = 1.266 MiB -> 0.35 MiB (q5_0)"
_LOG_LINE = re.compile(
    r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s+(\w+), +size =\s+[\d.]+ MiB"
    r"(?: ->\s+[\d.]+ MiB \((\w+)\))?"
)


class _Captured:
    """Collects llama.cpp's log while a call runs (and keeps it off stderr)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

        @llama_cpp.llama_log_callback
        def cb(level, text, user_data):  # noqa: ARG001
            self.parts.append(text.decode("utf-8", "replace"))

        self._cb = cb

    def __enter__(self) -> "_Captured":
        llama_cpp.llama_log_set(self._cb, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc) -> None:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))

    @property
    def text(self) -> str:
        return "".join(self.parts)


def llama_quantize(src: Path, dst: Path, preset: str, *, dry_run: bool = False, pure: bool = False,
                   imatrix: bool = False) -> tuple[dict[str, str] | None, str]:
    """Run llama.cpp; return (tensor -> type or None on failure, log). Types come from the output
    file (GGUFReader) or, with ``dry_run``, from llama.cpp's per-tensor log lines."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = preset_file_type(preset)
    params.nthread = 2
    params.dry_run = dry_run
    params.pure = pure
    keep = []
    if imatrix:  # any entry sets has_imatrix; a dry run never reads the values
        data = (ctypes.c_float * 1)(1.0)
        entries = (llama_cpp.llama_model_imatrix_data * 2)()
        entries[0].name, entries[0].data, entries[0].size = b"unused.weight", data, 1
        entries[1].name = None
        params.imatrix = entries
        keep += [data, entries]
    with _Captured() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        return None, log.text
    if dry_run:
        found = {m.group(1): (m.group(3) or m.group(2)).upper() for m in _LOG_LINE.finditer(log.text)}
        return found, log.text
    return {t.name: t.tensor_type.name for t in GGUFReader(dst).tensors}, log.text


@functools.lru_cache(maxsize=None)
def _model_facts(path: Path) -> tuple[list[tuple[str, tuple[int, ...]]], str, int]:
    """(tensors, arch, n_layers) of a GGUF (cached: reading SmolLM2's vocabulary takes 2 s)."""
    r = GGUFReader(path)
    arch = str(r.fields["general.architecture"].contents())
    n_layers = int(r.fields[f"{arch}.block_count"].contents())
    tensors = [(t.name, tuple(int(d) for d in reversed(t.shape.tolist()))) for t in r.tensors]
    return tensors, arch, n_layers


def _check(src: Path, dst: Path, preset: str, *, dry_run: bool, imatrix: bool = False,
           pure_ftype: str | None = None) -> dict[str, str]:
    tensors, arch, n_layers = _model_facts(src)
    got, log = llama_quantize(src, dst, pure_ftype or preset, dry_run=dry_run, pure=pure_ftype is not None,
                              imatrix=imatrix)
    assert got is not None, f"llama.cpp failed on {preset}:\n{log[-2000:]}"
    want = plan_tensor_types(preset, tensors, arch, n_layers, has_imatrix=imatrix, check_codecs=False)
    assert len(got) == len(tensors), f"{preset}: read {len(got)} of {len(tensors)} tensor types"
    diff = {n: (want.get(n), got.get(n)) for n in set(want) | set(got) if want.get(n) != got.get(n)}
    assert not diff, f"{src.name} {preset} imatrix={imatrix}: ours vs llama.cpp {sorted(diff.items())[:12]}"
    return got


# ---- models ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("presets")


@pytest.fixture(scope="module")
def shakespeare(work) -> Path:
    need(shakespeare_model_dir() is not None, "tiny-shakespeare-llama model folder")
    return shakespeare_f32_gguf(work / "shakespeare-f32.gguf")


@pytest.fixture(scope="module")
def smollm2(work) -> Path:
    need(smollm2_gguf_path() is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    return smollm2_f32_gguf(work / "smollm2-f32.gguf")


# (arch, config overrides): untied llama/qwen2 carry output.weight; llama has GQA 4 (8/2 heads)
TINY = {
    "llama": {},
    "llama-mha": {"num_key_value_heads": 8, "tie_word_embeddings": True},
    "qwen2": {},
    "qwen3": {},
    "gemma2": {},
    "gemma3": {},
}


@pytest.fixture(scope="module")
def tiny(work):
    made: dict[str, Path] = {}

    def get(name: str, **extra) -> Path:
        key = name + "".join(f"-{k}{v}" for k, v in sorted(extra.items()))
        if key not in made:
            arch = name.split("-")[0]
            cfg, tensors = tiny_hf_model(arch, **{**TINY.get(name, {}), **extra})
            made[key] = write_f32_gguf(cfg, tensors, work / f"tiny-{key}.gguf")
        return made[key]

    return get


# ---- the presets issue 4 promises -------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
def test_shakespeare_every_preset(shakespeare, work, preset):
    _check(shakespeare, work / f"shk-{preset}.gguf", preset, dry_run=False)
    (work / f"shk-{preset}.gguf").unlink()


def test_smollm2_every_preset(smollm2, work):
    full = os.environ.get("MLXQUANT_FULL_ORACLE") == "1"
    for preset in PRESETS:
        _check(smollm2, work / "smol-out.gguf", preset, dry_run=not full)


@pytest.mark.parametrize("preset", ["Q4_K_M", "Q2_K"])
def test_smollm2_real_quantization_and_dry_run_agree(smollm2, work, preset):
    dst = work / f"smol-{preset}.gguf"
    real = _check(smollm2, dst, preset, dry_run=False)
    dry, _ = llama_quantize(smollm2, work / "none.gguf", preset, dry_run=True)
    assert dry == real
    dst.unlink()
    if preset == "Q4_K_M":  # FIELD-NOTES: 576-wide rows fall back from Q4_K to Q5_0
        assert real["blk.0.attn_q.weight"] == "Q5_0" and real["token_embd.weight"] == "Q8_0"
        assert real["blk.0.ffn_down.weight"] == "Q6_K" and real["blk.0.attn_v.weight"] == "Q8_0"


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_architectures_every_preset(tiny, work, name):
    src = tiny(name)
    for preset in PRESETS:
        _check(src, work / "none.gguf", preset, dry_run=True)
    _check(src, work / f"out-{name}-Q3_K_M.gguf", "Q3_K_M", dry_run=False)


# ---- rules that need other inputs -----------------------------------------------------------

@pytest.mark.parametrize("name", ["llama", "qwen2", "gemma3"])
def test_imatrix_rules(tiny, shakespeare, smollm2, work, name):
    for src in (tiny(name), shakespeare, smollm2):
        for preset in PRESETS:
            _check(src, work / "none.gguf", preset, dry_run=True, imatrix=True)


def test_llama_cpp_other_mixtures(tiny, smollm2, work):
    """llama.cpp's other mixtures (IQ1..IQ3, Q2_K_S, Q2_0), with an importance matrix; without
    one, our plan refuses exactly those that llama.cpp says will need one."""
    others = [p for p in ALL_PRESETS if p not in PRESETS and p not in ("Q1_0", "MXFP4_MOE")]
    for src in (tiny("llama"), tiny("qwen3"), smollm2):
        tensors, arch, n_layers = _model_facts(src)
        for preset in others:
            _check(src, work / "none.gguf", preset, dry_run=True, imatrix=True)
            try:
                plan_tensor_types(preset, tensors, arch, n_layers, check_codecs=False)
            except ImatrixRequiredError as e:
                assert preset in str(e)
                _, log = llama_quantize(src, work / "none.gguf", preset, dry_run=True)
                assert "will require an imatrix" in log, preset
            else:
                _check(src, work / "none.gguf", preset, dry_run=True)


def test_row_size_without_any_fallback(tiny, smollm2, work):
    """Q1_0 (128-blocks) has no fallback type: 576-wide rows fail in llama.cpp and in our plan."""
    _check(tiny("llama"), work / "none.gguf", "Q1_0", dry_run=True)
    tensors, arch, n_layers = _model_facts(smollm2)
    with pytest.raises(QuantTypeError, match="no fallback type for Q1_0"):
        plan_tensor_types("Q1_0", tensors, arch, n_layers, check_codecs=False)
    got, log = llama_quantize(smollm2, work / "none.gguf", "Q1_0", dry_run=True)
    assert got is None and "no tensor type fallback" in log


@pytest.mark.parametrize("single,ftype", [("Q4_K", "Q4_K_M"), ("Q3_K", "Q3_K_S"), ("Q5_K", "Q5_K_M")])
def test_single_type_is_llama_quantize_pure(tiny, shakespeare, smollm2, work, single, ftype):
    for src in (tiny("llama"), shakespeare, smollm2):
        got = _check(src, work / "none.gguf", single, dry_run=True, pure_ftype=ftype)
        if src is shakespeare:
            assert got["token_embd.weight"] == single and got["blk.0.attn_norm.weight"] == "F32"


@pytest.mark.parametrize("name,extra", [
    ("llama", {"num_hidden_layers": 80}),                             # LLM_TYPE_70B: attn_v +bits
    ("llama-mha", {"num_hidden_layers": 80}),                         # 65B: no GQA, no 70B rule
    ("qwen2", {"num_hidden_layers": 80, "num_key_value_heads": 1}),  # 70B, GQA 8
])
def test_70b_and_gqa_rules(tiny, work, name, extra):
    src = tiny(name, intermediate_size=256, vocab_size=256, **extra)
    for preset in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "IQ4_NL", "IQ4_XS"):
        _check(src, work / "none.gguf", preset, dry_run=True)


def test_plan_api_details():
    tensors = [("token_embd.weight", (512, 256)), ("output_norm.weight", (256,)),
               ("blk.0.attn_v.weight", (64, 256)), ("blk.0.attn_q.weight", (256, 256)),
               ("blk.0.attn_k.weight", (64, 256)), ("blk.0.ffn_down.weight", (256, 512)),
               ("blk.0.attn_norm.weight", (1, 256))]
    plan = plan_tensor_types("q4_k_m", tensors, "llama", 1, source_types={"output_norm.weight": "F16"})
    assert plan["output_norm.weight"] == "F16" and plan["blk.0.attn_norm.weight"] == "F32"
    assert plan["token_embd.weight"] == "Q6_K"  # tied: the output rule
    assert plan["blk.0.attn_v.weight"] == "Q6_K" and plan["blk.0.ffn_down.weight"] == "Q6_K"
    # GQA from shapes (256 / 64 = 4) or given: IQ4_XS gives attn_v Q5_K from GQA 4 on
    assert plan_tensor_types("IQ4_XS", tensors, "llama", 1)["blk.0.attn_v.weight"] == "Q5_K"
    assert plan_tensor_types("IQ4_XS", tensors, "llama", 1, n_head=4, n_head_kv=2)["blk.0.attn_v.weight"] == "IQ4_XS"
    assert preset_file_type("Q4_K_M") == 15 and preset_file_type("q4_k") == 15
    with pytest.raises(QuantTypeError, match="unknown preset or type 'Q7_K'"):
        plan_tensor_types("Q7_K", tensors, "llama", 1)
    with pytest.raises(QuantTypeError):
        preset_file_type("Q8_K")


# ---- presets mlxquant cannot make yet -------------------------------------------------------

def test_unmakeable_presets_are_refused_before_planning():
    """Issue 11: a preset mlxquant cannot make (since issue 14 only Q1_0 and Q2_0) must fail up
    front (one line naming what is missing), not half-way through a file, nor make a file without
    the types its name promises."""
    from mlxquant.models.presets import check_makeable, makeable_presets, missing_codecs, preset_types

    tensors = [("token_embd.weight", (512, 256)), ("blk.0.attn_q.weight", (256, 256)),
               ("blk.0.attn_v.weight", (64, 256)), ("blk.0.ffn_down.weight", (256, 512))]
    refused = ("Q1_0", "Q2_0")
    low_bit = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M")
    for preset in refused:
        assert missing_codecs(preset), preset
        with pytest.raises(QuantTypeError, match=rf"^{preset}: needs .*which mlxquant cannot quantize yet "
                                                 r"\(supported presets: .*Q4_K_M"):
            plan_tensor_types(preset, tensors, "llama", 1, has_imatrix=True)
    with pytest.raises(QuantTypeError, match="^Q1_0: needs Q1_0, which"):
        check_makeable("q1_0")
    for preset in (*PRESETS, *low_bit):  # every preset mlxquant offers, and issue 14's, makeable
        check_makeable(preset)
        assert not missing_codecs(preset), preset
    assert set(PRESETS) <= set(makeable_presets()) and not set(refused) & set(makeable_presets())
    # Q2_K_S is makeable (K-quants only), though it needs an imatrix
    assert "Q2_K_S" in makeable_presets() and "IQ3_S" not in preset_types("Q2_K_S")
    with pytest.raises(ImatrixRequiredError):
        plan_tensor_types("Q2_K_S", tensors, "llama", 1)
    # single types: the type and its row-size fallback
    assert preset_types("Q4_K") == ("Q4_K", "Q5_0", "F16")
    check_makeable("Q4_K")
    with pytest.raises(QuantTypeError, match="unknown preset or type 'Q9_K'"):
        check_makeable("Q9_K")


def test_preset_types_cover_llama_cpp_choices(tiny, smollm2, work):
    """preset_types lists every type llama.cpp chose for a preset on real and tiny models."""
    from mlxquant.models.presets import preset_types

    for src in (tiny("llama"), tiny("llama-mha"), tiny("qwen2"), smollm2):
        for preset in ALL_PRESETS:
            if preset in ("Q1_0",) and src is smollm2:
                continue  # no fallback for 576-wide rows (test_row_size_without_any_fallback)
            for imatrix in (False, True):
                got, _ = llama_quantize(src, work / "none.gguf", preset, dry_run=True, imatrix=imatrix)
                if got is None:
                    continue  # needs an imatrix
                src_types = {"F32", "F16"}
                extra = set(got.values()) - set(preset_types(preset)) - src_types
                assert not extra, f"{src.name} {preset} imatrix={imatrix}: {sorted(extra)}"
