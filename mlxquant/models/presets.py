"""llama.cpp's per-tensor type choice for its quantization presets (``llama-quantize Q4_K_M`` ...).

A port of ``src/llama-quant.cpp`` of the llama.cpp that llama-cpp-python 0.3.36 vendors:
``tensor_allows_quantization`` (which tensors are quantized at all), ``llama_tensor_get_type_impl``
(the mixture rules: output/token_embd, more bits for some ``attn_v``/``ffn_down`` layers, ...),
``tensor_type_fallback`` (rows that are not a multiple of the block size) and
``tensor_requires_imatrix``. Tensors are visited in ``llama_model_loader``'s order (layer number,
then name), which the layer counters depend on.

Shapes are in NumPy order: a linear weight is ``(rows, cols)`` = ggml ``(ne1, ne0)``; a 1-D
tensor is ``(n,)``; a stack of experts is ``(n_expert, rows, cols)``.

Besides the presets, any single GGML type name (``"Q4_K"``, ``"IQ2_S"``...) means "every
quantizable tensor this type", llama-quantize's ``--pure``: no mixture rules, but the same
exclusions and row-size fallbacks.

A preset is *makeable* when mlxquant has a CPU codec for every type its rules can give any
tensor of any model (:func:`preset_types`); :func:`plan_tensor_types` refuses the others before
anything is written (the IQ1/IQ2/IQ3 mixtures until those codecs exist), so a file named after a
preset is always what llama.cpp would make under that name.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Iterable, Sequence

from ..errors import ImatrixRequiredError, QuantTypeError
from ..quant import codecs_for
from ..quant.types import TYPES, get_type
from .tensor_types import manual_type

log = logging.getLogger(__name__)

# LLAMA_FTYPE_* (include/llama.h): the preset names and what general.file_type stores.
FTYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
    "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "IQ2_XXS": 19, "IQ2_XS": 20, "Q2_K_S": 21,
    "IQ3_XS": 22, "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25, "IQ3_S": 26, "IQ3_M": 27,
    "IQ2_S": 28, "IQ2_M": 29, "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32, "TQ1_0": 36, "TQ2_0": 37,
    "MXFP4_MOE": 38, "Q1_0": 40, "Q2_0": 41,
}

# llama_ftype_get_default_type
_DEFAULT_TYPE: dict[str, str] = {
    "F32": "F32", "F16": "F16", "BF16": "BF16", "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0",
    "Q5_1": "Q5_1", "Q8_0": "Q8_0", "Q1_0": "Q1_0", "Q2_0": "Q2_0", "MXFP4_MOE": "MXFP4",
    "Q2_K_S": "Q2_K", "Q2_K": "Q2_K", "IQ3_XS": "IQ3_S", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K", "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K", "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS",
    "IQ2_S": "IQ2_XS", "IQ2_M": "IQ2_S", "IQ3_XXS": "IQ3_XXS", "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M",
    "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS", "IQ3_S": "IQ3_S", "IQ3_M": "IQ3_S",
}

# The presets mlxquant offers (issue 4); ALL_PRESETS adds llama.cpp's other mixtures.
PRESETS: tuple[str, ...] = (
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1",
    "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "F16", "BF16", "F32",
)
ALL_PRESETS: tuple[str, ...] = tuple(FTYPES)

# Types a single-type plan may use, and the file type it records (the mixture with that default).
_NOT_STORAGE = {"Q8_1", "Q8_K", "I8", "I16", "I32", "I64", "F64"}
# (A name that is both, like "Q4_0" or "IQ2_S", is the preset, as for llama-quantize.)
_SINGLE_FTYPE: dict[str, int] = {
    "Q3_K": FTYPES["Q3_K_M"], "Q4_K": FTYPES["Q4_K_M"], "Q5_K": FTYPES["Q5_K_M"],
    "MXFP4": FTYPES["MXFP4_MOE"], "NVFP4": 39,
}

# Tensor-name fragments never quantized (tensor_allows_quantization); the model-specific ones
# for other architectures are kept so that plans stay right for any GGUF name.
_NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
    "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
)
_NEVER_QUANTIZED_EXACT = ("position_embd.weight", "token_types.weight")

_IQ_LOW = {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"}
_NEEDS_IMATRIX = {"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"}
_BLK = re.compile(r"^blk\.(-?\d+)\.")


def preset_file_type(preset: str) -> int:
    """``general.file_type`` (LLAMA_FTYPE) for a preset name or a single type name."""
    name = preset.upper()
    if name in FTYPES:
        return FTYPES[name]
    t = _single_type(name)
    if t in _SINGLE_FTYPE:
        return _SINGLE_FTYPE[t]
    raise QuantTypeError(f"{preset}: no llama.cpp file type records this type")


def preset_default_type(preset: str) -> str:
    """The type most of a preset's tensors get (llama_ftype_get_default_type), or the type
    itself for a single-type name."""
    name = preset.upper()
    return _DEFAULT_TYPE.get(name) or _single_type(name)


def _single_type(name: str) -> str:
    if name in TYPES and name not in _NOT_STORAGE:
        return name
    raise QuantTypeError(
        f"unknown preset or type {name!r}; presets: {', '.join(makeable_presets())}; or one GGML type"
    )


def tensor_category(name: str) -> str:
    """llama.cpp's broad tensor category (``tensor_get_category``)."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for frag, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"),
                      ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
                      ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if frag in name:
            return cat
    return "other"


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: dimensions up to the last one above 1 in ggml order (leading in NumPy's)."""
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return max(1, len(dims))


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """Whether llama.cpp quantizes this tensor at all (else it keeps the source type): only
    2-D/3-D tensors whose name ends in ``weight``, and none of the excluded kinds (norms,
    expert routers, positional embeddings, ...)."""
    if _n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    if name in _NEVER_QUANTIZED_EXACT:
        return False
    return not any(frag in name for frag in _NEVER_QUANTIZED)


def _layer_of(name: str) -> int:
    m = _BLK.match(name)
    return int(m.group(1)) if m else -1


def loader_order(names: Iterable[str]) -> list[str]:
    """llama_model_loader's tensor order: by ``blk.N`` number (others first), then by name."""
    return sorted(names, key=lambda n: (_layer_of(n), n.encode()))


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


class _State:
    """quantize_state_impl: the counters and model facts the rules read."""

    def __init__(self, arch: str, n_layers: int, n_gqa: int, n_expert: int, has_imatrix: bool,
                 is_70b: bool, n_attention_wv: int, tied: bool) -> None:
        self.arch, self.n_layers, self.n_gqa, self.n_expert = arch, n_layers, n_gqa, n_expert
        self.has_imatrix, self.is_70b, self.tied = has_imatrix, is_70b, tied
        self.n_attention_wv = n_attention_wv
        self.i_attention_wv = self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0

    def layer(self, counter: int, name: str) -> tuple[int, int]:
        """layer_info: the counter for dense models, the name's block for MoE ones."""
        if self.n_expert > 1:
            m = _BLK.match(name)
            if m is None:
                raise QuantTypeError(f"failed to determine the layer of tensor {name!r}")
            return int(m.group(1)), self.n_layers
        return counter, self.n_layers


def _mixture_type(qs: _State, t: str, name: str, shape: tuple[int, ...], ftype: str, cat: str) -> str:
    """llama_tensor_get_type_impl: the mixture's choice for one quantizable tensor."""
    falcon = qs.arch == "falcon"
    if cat == "output" or (qs.tied and cat == "token_embd"):
        if ftype == "MXFP4_MOE" or falcon or shape[-1] % get_type(t).block_size:
            return "Q8_0"
        if ftype in ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"):
            return "Q5_K"
        return t if t == "Q8_0" else "Q6_K"
    if ftype == "MXFP4_MOE":
        ne2 = shape[-3] if len(shape) >= 3 else 1
        return "MXFP4" if ne2 > 1 else "Q8_0"
    if cat == "token_embd":
        if ftype in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return "Q2_K"
        if ftype in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return "IQ3_S"
        if ftype in ("TQ1_0", "TQ2_0", "Q2_0"):
            return "Q4_K"
        return t
    attn_v = cat in ("attn_v", "attn_qkv", "attn_kv_b")
    if ftype in _IQ_LOW:
        iq2 = ftype in ("IQ2_S", "IQ2_M")
        if attn_v:
            t = "Q4_K" if qs.n_gqa >= 4 or qs.n_expert >= 4 else ("IQ3_S" if iq2 else "Q2_K")
            qs.i_attention_wv += 1
        elif qs.n_expert == 8 and cat == "attn_k":
            t = "Q4_K"
        elif cat == "ffn_down":
            if qs.i_ffn_down < qs.n_layers // 8:
                t = "IQ3_S" if iq2 else "Q2_K"
            qs.i_ffn_down += 1
        elif cat == "attn_output":
            if qs.n_expert == 8:
                t = "Q5_K"
            elif ftype in ("IQ1_S", "IQ1_M"):
                t = "IQ2_XXS"
            elif iq2:
                t = "IQ3_S"
        return t
    if attn_v:
        t = _attn_v_type(qs, t, ftype)
        qs.i_attention_wv += 1
        return t
    if cat == "attn_k":
        if qs.n_expert == 8:
            return "Q8_0"
        return {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}.get(ftype, t)
    if cat == "attn_q":
        return {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}.get(ftype, t)
    if cat == "ffn_down":
        i, n = qs.layer(qs.i_ffn_down, name)
        t = _ffn_down_type(qs, t, ftype, i, n)
        qs.i_ffn_down += 1
        return t
    if cat == "attn_output":
        if not falcon:
            if qs.n_expert == 8:
                if ftype in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S",
                             "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS"):
                    t = "Q5_K"
            else:
                t = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K",
                     "IQ3_M": "Q4_K"}.get(ftype, t)
        elif ftype == "Q3_K_L":
            t = "Q4_K"
        return t
    if cat == "attn_qkv":  # unreachable (attn_qkv is attn_v-like), kept as in llama.cpp
        return t
    if cat in ("ffn_gate", "ffn_up"):
        counter = qs.i_ffn_gate if cat == "ffn_gate" else qs.i_ffn_up
        i, n = qs.layer(counter, name)
        if ftype == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
            t = "IQ3_XXS"
        if cat == "ffn_gate":
            qs.i_ffn_gate += 1
        else:
            qs.i_ffn_up += 1
    return t


def _attn_v_type(qs: _State, t: str, ftype: str) -> str:
    gqa4 = qs.n_gqa >= 4
    if ftype == "Q2_K":
        t = "Q4_K" if gqa4 else "Q3_K"
    elif ftype == "Q2_K_S" and gqa4:
        t = "Q4_K"
    elif ftype == "IQ3_XXS":
        t = "Q4_K" if gqa4 else ("IQ3_S" if not qs.has_imatrix else "IQ3_XXS")
    elif ftype in ("IQ3_XS", "IQ3_S") and gqa4:
        t = "Q4_K"
    elif ftype == "IQ3_M":
        t = "Q4_K"
    elif ftype == "Q3_K_M":
        t = "Q5_K" if qs.i_attention_wv < 2 else "Q4_K"
    elif ftype == "Q3_K_L":
        t = "Q5_K"
    elif ftype in ("IQ4_NL", "IQ4_XS") and gqa4:
        t = "Q5_K"
    elif ftype in ("Q4_K_M", "Q5_K_M") and _more_bits(qs.i_attention_wv, qs.n_attention_wv):
        t = "Q6_K"
    elif ftype == "Q4_K_S" and qs.i_attention_wv < 4:
        t = "Q5_K"
    if qs.is_70b and t in ("Q3_K", "Q4_K"):
        t = "Q5_K"
    if qs.n_expert == 8:
        t = "Q8_0"
    return t


def _ffn_down_type(qs: _State, t: str, ftype: str, i: int, n: int) -> str:
    falcon = qs.arch == "falcon"
    if ftype == "Q2_K":
        return "Q3_K"
    if ftype == "Q2_K_S":
        return "Q4_K" if i < n // 8 else t
    if ftype == "IQ3_XXS" and not qs.has_imatrix:
        return "Q4_K" if i < n // 8 else "Q3_K"
    if ftype == "Q3_K_M":
        if i < n // 16:
            return "Q5_K"
        return "Q4_K" if not falcon or _more_bits(i, n) else "Q3_K"
    if ftype == "IQ3_M" and (i < n // 8 or (qs.n_expert == 8 and _more_bits(i, n))):
        return "Q4_K"
    if ftype == "Q3_K_L":
        return "Q4_K" if falcon else "Q5_K"
    if ftype == "Q4_K_M":
        if falcon:
            return "Q6_K" if i < n // 16 else ("Q5_K" if _more_bits(i, n) else "Q4_K")
        return "Q6_K" if _more_bits(i, n) else t
    if i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not qs.has_imatrix:
        return "Q5_K"
    if ftype == "Q5_K_M" and _more_bits(i, n):
        return "Q6_K"
    if ftype == "Q4_K_S" and not falcon and i < n // 8:
        return "Q5_K"
    if ftype in ("Q4_0", "Q5_0") and qs.has_imatrix and i < n // 8:
        return "Q4_1" if ftype == "Q4_0" else "Q5_1"
    return t


_FALLBACK = {
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL",
    "IQ2_S": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL",
    "Q2_0": "Q4_0", "Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}


def fallback_type(name: str, ncols: int, t: str) -> str:
    """tensor_type_fallback: a type whose block divides a row of ``ncols`` (F16 as last resort)."""
    block = get_type(t).block_size
    if ncols % block == 0:
        return t
    if t in _FALLBACK:
        new = _FALLBACK[t]
    elif block <= 32:
        new = t
    else:
        raise QuantTypeError(f"tensor {name!r}: no fallback type for {t} with rows of {ncols}")
    return new if ncols % get_type(new).block_size == 0 else "F16"


def _n_gqa(tensors: dict[str, tuple[int, ...]], n_head: int | None, n_head_kv: int | None) -> int:
    if n_head is not None:
        return max(1, n_head // (n_head_kv or n_head))
    q, k = tensors.get("blk.0.attn_q.weight"), tensors.get("blk.0.attn_k.weight")
    if q is None or k is None or not k[0]:
        return 1
    return max(1, q[0] // k[0])


def plan_tensor_types(preset: str, tensors: list[tuple[str, tuple[int, ...]]], arch: str,
                      n_layers: int, has_imatrix: bool = False,
                      source_types: dict[str, str] | None = None, *,
                      n_head: int | None = None, n_head_kv: int | None = None,
                      n_expert: int = 0, check_codecs: bool = True,
                      tensor_types: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """The GGML type llama.cpp's ``llama_model_quantize`` gives each tensor of a model.

    Args:
        preset: a llama.cpp mixture (:data:`PRESETS`, :data:`ALL_PRESETS`, case-insensitive) or a
            single GGML type name (every quantizable tensor that type, as ``--pure``).
        tensors: ``(GGUF name, NumPy-order shape)`` of every tensor in the file, in any order.
        arch: GGUF architecture string (``"llama"``, ``"qwen2"``...).
        n_layers: ``{arch}.block_count``.
        has_imatrix: an importance matrix will be given (changes some rules).
        source_types: current type of each tensor (default ``"F32"``); tensors that are not
            quantized keep it.
        n_head, n_head_kv: attention heads (``n_gqa = n_head / n_head_kv`` chooses more bits for
            ``attn_v``); by default inferred from ``blk.0.attn_q``/``attn_k`` row counts.
        n_expert: experts per MoE layer (0 for dense models).
        check_codecs: refuse a preset that is not makeable (:func:`check_makeable`) before
            planning (default True; False plans it anyway, to compare with llama.cpp).
        tensor_types: ``(pattern, type)`` overrides as llama-quantize's ``--tensor-type`` applies
            them (:mod:`mlxquant.models.tensor_types`): the first pattern found in the name of a
            tensor the preset quantizes gives its type, then the row-size fallback.

    Returns: GGUF tensor name -> GGML type name, for every tensor.
    Raises: QuantTypeError for an unknown or unmakeable preset or a tensor no type fits;
        ImatrixRequiredError when the plan needs an importance matrix and ``has_imatrix`` is False.
    """
    if check_codecs:
        check_makeable(preset)
    name_u = preset.upper()
    pure = name_u not in FTYPES
    default = _single_type(name_u) if pure else _DEFAULT_TYPE[name_u]
    ftype = name_u if not pure else ""
    shapes = {n: tuple(int(d) for d in s) for n, s in tensors}
    order = loader_order(shapes)
    cats = {n: tensor_category(n) for n in order}
    gqa = _n_gqa(shapes, n_head, n_head_kv)
    # LLM_TYPE_70B, for which attn_v gets more bits (src/models/llama.cpp, qwen2.cpp)
    is_70b = n_layers == 80 and ((arch == "llama" and gqa != 1 and n_expert != 8) or arch == "qwen2")
    qs = _State(arch, n_layers, gqa, n_expert, has_imatrix, is_70b,
                sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in cats.values()),
                tied="output" not in cats.values())
    quantized = get_type(default).is_quantized
    plan: dict[str, str] = {}
    for name in order:
        shape = shapes[name]
        if not allows_quantization(name, shape):
            plan[name] = (source_types or {}).get(name, "F32")
            continue
        t = default
        if quantized:
            manual = manual_type(name, tensor_types) if tensor_types else None
            if manual is not None:
                if check_codecs and not _has_cpu_codec(manual):
                    raise QuantTypeError(f"tensor {name!r}: --tensor-type asks for {manual}, which "
                                         "mlxquant cannot quantize yet")
                t = manual
            elif not pure:
                t = _mixture_type(qs, t, name, shape, ftype, cats[name])
            chosen, t = t, fallback_type(name, shape[-1], t)
            if t != chosen:
                log.info("%s: tensor %s: rows of %d are not a multiple of %s's block; written as %s "
                         "(llama.cpp's fallback)", preset, name, shape[-1], chosen, t)
        if not has_imatrix and _requires_imatrix(name, t, ftype):
            raise ImatrixRequiredError(
                f"{preset}: tensor {name!r} would be {t}, which llama.cpp only makes with an "
                "importance matrix (--imatrix)")
        plan[name] = t
    return plan


def type_needs_imatrix(t: str) -> bool:
    """llama-quantize refuses to write ``t`` without an importance matrix (a superset of the
    types ggml itself requires one for)."""
    return t in _NEEDS_IMATRIX or get_type(t).requires_imatrix


def _requires_imatrix(name: str, t: str, ftype: str) -> bool:
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    return t in _NEEDS_IMATRIX or (t == "Q2_K" and ftype == "Q2_K_S")


# ---- which presets mlxquant can make ----------------------------------------------------------

_FLOATS = ("F32", "F16", "BF16")
# The model facts the mixture rules branch on: (arch, n_gqa, n_expert, has_imatrix, is_70b).
_PROBES = [(arch, gqa, n_expert, imatrix, is_70b)
           for arch in ("llama", "falcon") for gqa in (1, 4, 8) for n_expert in (0, 8)
           for imatrix in (False, True) for is_70b in (False, True)]
_PROBE_LAYERS = 16
_PROBE_NAMES = ("attn_v", "attn_qkv", "attn_kv_b", "attn_k", "attn_q", "attn_output", "ffn_down",
                "ffn_gate", "ffn_up")


@lru_cache(maxsize=None)
def preset_types(preset: str) -> tuple[str, ...]:
    """Every type the rules of ``preset`` (a preset or single type name) can give a tensor of
    any model, the default first: the mixture's choices on every branch (GQA, experts, 70B,
    falcon, with and without an importance matrix, tied or not) and their row-size fallbacks.

    Raises: QuantTypeError for an unknown name.
    """
    name = preset.upper()
    pure = name not in FTYPES
    default = _single_type(name) if pure else _DEFAULT_TYPE[name]
    found = [default]
    if get_type(default).is_quantized and not pure:
        for arch, gqa, n_expert, imatrix, is_70b in _PROBES:
            qs = _State(arch, _PROBE_LAYERS, gqa, n_expert, imatrix, is_70b, _PROBE_LAYERS, False)
            # 3-D (stacked experts) shapes matter only to MXFP4_MOE's rule
            for shape in ((256, 256),) + (((2, 256, 256),) if name == "MXFP4_MOE" else ()):
                for name_, cat in (("output.weight", "output"), ("token_embd.weight", "token_embd")):
                    found.append(_mixture_type(qs, default, name_, shape, name, cat))
                for i in range(_PROBE_LAYERS):
                    for c in _PROBE_NAMES:
                        found.append(_mixture_type(qs, default, f"blk.{i}.{c}.weight", shape, name,
                                                   tensor_category(f"blk.{i}.{c}.weight")))
    closure = list(dict.fromkeys(found))
    for t in closure:  # tensor_type_fallback of each, then F16 as the last resort
        for new in (_FALLBACK.get(t), "F16" if get_type(t).is_quantized else None):
            if new is not None and new not in closure:
                closure.append(new)
    return tuple(closure)


def _has_cpu_codec(t: str) -> bool:
    return t in _FLOATS or any(b in ("numpy", "numba") for b in codecs_for(t))


def missing_codecs(preset: str) -> list[str]:
    """The types ``preset`` can produce that mlxquant cannot quantize yet (empty: makeable)."""
    return [t for t in preset_types(preset) if not _has_cpu_codec(t)]


def preset_requires_imatrix(preset: str) -> bool:
    """Whether llama.cpp makes ``preset`` only with an importance matrix (its default type
    needs one, or Q2_K_S, whose Q2_K tensors do)."""
    name = preset.upper()
    return name == "Q2_K_S" or preset_default_type(name) in _NEEDS_IMATRIX


def makeable_presets() -> list[str]:
    """The llama.cpp presets (:data:`ALL_PRESETS`) mlxquant can make, in llama.cpp's order."""
    return [p for p in ALL_PRESETS if not missing_codecs(p)]


def check_makeable(preset: str) -> None:
    """Raise unless mlxquant can quantize every type ``preset`` can produce.

    Raises: QuantTypeError naming the preset, the missing types and the presets it can make,
        e.g. ``IQ3_M: needs IQ3_S, which mlxquant cannot quantize yet (supported presets: ...)``.
    """
    missing = missing_codecs(preset)
    if missing:
        raise QuantTypeError(
            f"{preset.upper()}: needs {', '.join(missing)}, which mlxquant cannot quantize yet "
            f"(supported presets: {', '.join(makeable_presets())})")
