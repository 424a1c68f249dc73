"""The NumPy float32 forward pass: llama, qwen2, qwen3, gemma2, gemma3 on any CPU.

Weights come from :class:`~mlxquant.runtime.weights.Weights` in Hugging Face layout (RoPE in the
"rotate half" form), the model's conventions from :class:`~mlxquant.runtime.spec.ModelSpec`.
Matrix products (:func:`~mlxquant.runtime.kernels.linear`) go to NumPy's BLAS for float32 weights
(``x @ W.T`` on a row-major ``(out, in)`` weight needs no copy) and to the fused kernels for
weights kept in their GGUF blocks (:class:`~mlxquant.runtime.kernels.QuantMatrix`); every
activation stays float32, softmax and norms are computed in float32 as llama.cpp does.

Per block (gemma's extra "sandwich" norms in brackets)::

    a = attn(norm(h));            h = h + [post_attn_norm](a)
    m = mlp([pre_ffn_]norm(h));   h = h + [post_ffn_norm](m)

Long inputs are processed in batches of ``batch`` tokens (default 512) through the KV cache, so the
attention scores of one batch, ``(heads, batch, context)`` float32, bound the scratch memory.

A decode step (one token) is mostly call overhead on small models (issue 16): its attention (RoPE,
cache write, scores, softmax, sum of V) is one compiled call
(:func:`~mlxquant.runtime.kernels.attention.attend_one`, same result up to float32 rounding);
the per-layer tensors are looked up and checked once while the weights stay in memory and
unchanged (:attr:`Weights.version <mlxquant.runtime.weights.Weights.version>`), and RoPE tables
are kept per frequency vector and sliced per step. Prompts keep the NumPy path (BLAS-sized
products). In a generation's prefill of a model kept in GGUF blocks, the products' rows, the
gated MLP's columns and the attention's heads are split over the chosen threads, BLAS on one
thread each (:class:`~mlxquant.runtime.blas.ThreadChooser` ``split``); like any change of BLAS's
thread count, that moves results in the last bits only.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from ..errors import FormatError
from .blas import ThreadChooser
from .kernels import QuantMatrix, linear
from .kernels.attention import attend_one, attend_one_serial, rms_norm_row
from .kernels.matrix import (SPLIT_MIN_MACS, gated, kernel_rows, kernel_threads, launch, linear_group, run_parts,
                             tile_threads)
from .kernels.step import CODES as STEP_CODES
from .kernels.step import decode_block, decode_step, plan_empty, plan_list, plan_push, release_ir
from .memory import release_compiler_if_used
from .ops import Rope, apply_rope, attention_mask, gelu_tanh, rms_norm, rope_tables, silu
from .spec import ModelSpec
from .weights import Weights

Matrix = np.ndarray | QuantMatrix

Observer = Callable[[int, str, np.ndarray], None]
ATTN_BLOCK = 128  # query rows per attention block of a prompt (causal: later keys are skipped)


class KVCache:
    """Per-layer keys and values, float32 ``(kv_heads, capacity, head_dim)``, grown by doubling.

    ``offset`` is the number of positions stored (the position of the next token)."""

    def __init__(self, spec: ModelSpec, capacity: int = 256):
        self.spec = spec
        self.offset = 0
        self._alloc(max(1, capacity))

    def _alloc(self, cap: int) -> None:
        s = self.spec
        # one array per kind, (layers, kv_heads, capacity, head_dim): the compiled decode step
        # takes them whole; .k[i] / .v[i] are views
        self.all_k = np.zeros((s.n_layers, s.n_kv_heads, cap, s.head_dim), np.float32)
        self.all_v = np.zeros_like(self.all_k)
        self.k = list(self.all_k)
        self.v = list(self.all_v)

    @property
    def capacity(self) -> int:
        return self.all_k.shape[2]

    def reserve(self, n: int) -> None:
        """Make room for ``n`` more positions."""
        need = self.offset + n
        if need <= self.capacity:
            return
        old_k, old_v = self.all_k, self.all_v
        self._alloc(max(need, 2 * self.capacity))
        self.all_k[:, :, : self.offset] = old_k[:, :, : self.offset]
        self.all_v[:, :, : self.offset] = old_v[:, :, : self.offset]

    def nbytes(self) -> int:
        return self.all_k.nbytes + self.all_v.nbytes


@dataclass
class _Layer:
    """The tensors of one block (borrowed from :class:`Weights`): float32 norms and biases, the
    matrices float32 or in their GGUF blocks."""

    attn_norm: np.ndarray
    q: Matrix
    k: Matrix
    v: Matrix
    o: Matrix
    ffn_norm: np.ndarray
    gate: Matrix
    up: Matrix
    down: Matrix
    q_bias: np.ndarray | None = None
    k_bias: np.ndarray | None = None
    v_bias: np.ndarray | None = None
    o_bias: np.ndarray | None = None
    q_norm: np.ndarray | None = None
    k_norm: np.ndarray | None = None
    post_attn_norm: np.ndarray | None = None
    post_ffn_norm: np.ndarray | None = None


class _Held(NamedTuple):
    """Every block's :class:`_Layer`, the final norm and the output matrix, built once for one
    :attr:`Weights.version <mlxquant.runtime.weights.Weights.version>` of weights held in memory;
    ``plans``: each block's fixed arguments of the compiled decode block
    (:func:`~mlxquant.runtime.kernels.step.decode_block`), None where the model has none;
    ``typed``: the same in a Numba typed list for :func:`~mlxquant.runtime.kernels.step.decode_step`
    (None when the blocks' arguments are not all of one type, e.g. some matrices read-only)."""

    version: int
    layers: list[_Layer]
    final_norm: np.ndarray
    output: Matrix
    plans: list[tuple] | None
    typed: Any = None


_EMPTY_F32 = np.zeros(0, np.float32)
_EMPTY_ORDER = np.zeros(0, np.intp)


_STEP_VERSIONS = [0]  # decode_step's compiled versions when its IR was last released
_MASKS = threading.local()  # each thread's recent attention masks (the same for every block)
MASKS_KEPT = 8


def _mask(p0: int, T: int, window: int | None) -> np.ndarray:
    """:func:`~mlxquant.runtime.ops.attention_mask`, made once per thread for all the blocks of
    a prompt (it took 65 us per block and query block of a 256-token prompt: 5 % of the tiny
    model's). Read-only; at most :data:`MASKS_KEPT` kept (the latest)."""
    kept = getattr(_MASKS, "d", None)
    if kept is None:
        kept = _MASKS.d = {}
    key = (p0, T, window)
    m = kept.get(key)
    if m is None:
        if len(kept) >= MASKS_KEPT:
            kept.clear()
        m = kept[key] = attention_mask(p0, T, window)
        m.setflags(write=False)
    return m


def _typed_list(plans: list[tuple] | None) -> Any:
    """``plans`` as a Numba typed list (its items must share one type), or None."""
    if not plans:
        return None
    from numba import typeof
    from numba.core.errors import NumbaError

    try:
        # one type for all, exactly: a typed list would cast a read-only block's arrays to the
        # first block's writable type (a swapped-in tensor) instead of refusing
        if len({typeof(p) for p in plans}) != 1:
            return None
        typed = plan_list(plans[0])
        for p in plans[1:]:
            plan_push(typed, p)
    except (NumbaError, TypeError, ValueError):
        return None
    return typed


def _plan_matrix(w: Matrix) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(type code, stored bytes, HF row order) of a matrix for the compiled decode block."""
    if not kernel_rows(w):
        return None
    if isinstance(w, QuantMatrix):
        code = STEP_CODES.get(w.qtype)
        return None if code is None else (code, w.raw, _EMPTY_ORDER if w.out_rows is None else w.out_rows)
    return STEP_CODES["F32"], w.view(np.uint8), _EMPTY_ORDER


class NumpyModel:
    """A model ready to run: :meth:`forward` maps token ids to next-token logits.

    Args:
        weights: the opened model (:func:`~mlxquant.runtime.weights.open_weights`).
        spec: its :class:`ModelSpec`.
        batch: tokens per forward batch (default 512).
    """

    backend = "numpy"
    observer: Observer | None = None
    """``observer(layer, role, x)`` sees the float32 input ``(tokens, columns)`` of each group of
    matmuls sharing it: ``attn_qkv``, ``attn_output``, ``ffn_gate_up``, ``ffn_down`` (layer = block)
    and ``output`` (layer -1). None (default): no cost. ``forward(..., observer=f)`` sets one for a
    single call, so that threads running chunks side by side each see their own
    (:mod:`mlxquant.calib` does)."""

    def __init__(self, weights: Weights, spec: ModelSpec, batch: int = 512, tokenizer: Any = None):
        self.weights, self.spec, self.batch = weights, spec, max(1, int(batch))
        self.tokenizer = tokenizer
        # BLAS thread counts for generation (see mlxquant.runtime.blas): kept across calls
        # a prefill is one long pass: one pass explores (a decode step: two, see ThreadChooser)
        # a prefill of blocks kept quantized splits its tiles over the threads (see ThreadChooser)
        self.blas_threads = {"prefill": ThreadChooser(period=2, max_period=16, explore=1,
                                                      split=bool(weights.quantized)),
                             "decode": ThreadChooser()}
        self._held_parts: _Held | None = None
        self._decode_prepared = -1  # the weights' version prepare_decode last loaded code for
        self._rope_tables: dict[int, Rope] = {}  # by id() of a spec.inv_freq array (see _ropes)

    def new_cache(self, capacity: int = 256) -> KVCache:
        return KVCache(self.spec, capacity)

    def prepare_decode(self) -> None:
        """Load the compiled code a generation runs after its prompt's blocks: the decode step
        (:func:`~mlxquant.runtime.kernels.step.decode_step`, run on no block) and the output
        head's one-row product (run once on zeros); then give the compiler's pages back
        (:mod:`~mlxquant.runtime.memory`). A generation calls this before its prompt, so that
        loading them (~60 MB of LLVM's pages for the step) does not come on top of every weight
        page the prompt made resident: the peak is then the weights'. Once per version of the
        weights held in memory; nothing when they are decoded per use (a ``--memory`` budget)."""
        held = self._held()
        if held is None or self._decode_prepared == held.version:
            return
        zero = np.zeros((1, self.spec.hidden), np.float32)
        if held.typed is not None:
            self._decode_blocks(held._replace(typed=plan_empty(held.plans[0])), zero, self.new_cache(1), 0,
                                self._ropes(0, 1))
        self._head(zero)
        release_compiler_if_used()
        self._decode_prepared = held.version

    # -- weights ---------------------------------------------------------------------------
    def _norm_w(self, name: str) -> np.ndarray:
        w = self.weights.get(name)
        return w + np.float32(self.spec.norm_offset) if self.spec.norm_offset else w

    def _held(self) -> _Held | None:
        """The per-layer objects, looked up and checked once while every weight stays in memory
        (:attr:`Weights.held`) and unchanged (:meth:`Weights.swapped` bumps the version); None
        when the weights are decoded per use (past the memory budget)."""
        w = self.weights
        held = self._held_parts
        if held is not None and held.version == w.version:
            return held
        if not w.held:
            return None
        version = w.version  # a swap while building shows as a newer version at the next call
        layers = []
        for i in range(self.spec.n_layers):
            L = self._load_layer(i)
            self._check_layer(i, L)
            layers.append(L)
        plans = self._plans(layers)
        held = self._held_parts = _Held(version, layers, self._norm_w("model.norm.weight"), self._output(),
                                        plans, _typed_list(plans))
        return held

    def _plans(self, layers: list[_Layer]) -> list[tuple] | None:
        """Each block's fixed arguments of :func:`~mlxquant.runtime.kernels.step.decode_block`
        (None: this model's blocks take the Python decode path: per-head q/k norms, gemma's
        sandwich norms or soft-capping, or a matrix without a compiled kernel)."""
        s = self.spec
        if s.qk_norm or s.sandwich_norms or s.attn_softcap or s.activation not in ("silu", "gelu_tanh") \
                or s.n_heads * s.head_dim == 0 or os.environ.get("MLXQUANT_DECODE_BLOCK", "1") == "0":
            return None
        plans = []
        for L in layers:
            mats = [_plan_matrix(w) for w in (L.q, L.k, L.v, L.o, L.gate, L.up, L.down)]
            if any(m is None for m in mats) or L.q.shape[0] != s.n_heads * s.head_dim:
                return None
            codes = np.array([m[0] for m in mats], np.int64)
            biases = (L.q_bias, L.k_bias, L.v_bias, L.o_bias)
            plans.append((L.attn_norm, L.ffn_norm, codes, *(m[1] for m in mats), mats[0][2], mats[1][2],
                          *(_EMPTY_F32 if b is None else b for b in biases)))
        return plans

    def _layer(self, i: int) -> _Layer:
        held = self._held()
        if held is not None:
            return held.layers[i]
        L = self._load_layer(i)
        self._check_layer(i, L)
        return L

    def _check_layer(self, i: int, L: _Layer) -> None:
        """Every tensor of block ``i`` has the shape the spec implies (a file's config and its
        tensors can disagree; NumPy would fail deep inside the forward pass)."""
        s = self.spec
        q_rows, kv_rows, ff = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim, L.gate.shape[0]
        want = {"self_attn.q_proj.weight": (L.q, (q_rows, s.hidden)),
                "self_attn.k_proj.weight": (L.k, (kv_rows, s.hidden)),
                "self_attn.v_proj.weight": (L.v, (kv_rows, s.hidden)),
                "self_attn.o_proj.weight": (L.o, (s.hidden, q_rows)),
                "mlp.gate_proj.weight": (L.gate, (ff, s.hidden)),
                "mlp.up_proj.weight": (L.up, (ff, s.hidden)),
                "mlp.down_proj.weight": (L.down, (s.hidden, ff)),
                "input_layernorm.weight": (L.attn_norm, (s.hidden,)),
                "<ffn norm>": (L.ffn_norm, (s.hidden,)),
                "self_attn.q_proj.bias": (L.q_bias, (q_rows,)),
                "self_attn.k_proj.bias": (L.k_bias, (kv_rows,)),
                "self_attn.v_proj.bias": (L.v_bias, (kv_rows,)),
                "self_attn.o_proj.bias": (L.o_bias, (s.hidden,)),
                "self_attn.q_norm.weight": (L.q_norm, (s.head_dim,)),
                "self_attn.k_norm.weight": (L.k_norm, (s.head_dim,)),
                "post_attention_layernorm.weight": (L.post_attn_norm, (s.hidden,)),
                "post_feedforward_layernorm.weight": (L.post_ffn_norm, (s.hidden,))}
        for name, (a, shape) in want.items():
            if a is not None and a.shape != shape:
                raise FormatError(f"{self.weights.path}: tensor 'model.layers.{i}.{name}' has shape "
                                  f"{list(a.shape)}, the config implies {list(shape)}")

    def _load_layer(self, i: int) -> _Layer:
        p = f"model.layers.{i}."
        g = self.weights.get_optional
        gemma = self.spec.sandwich_norms
        return _Layer(
            attn_norm=self._norm_w(p + "input_layernorm.weight"),
            q=self.weights.linear(p + "self_attn.q_proj.weight"),
            k=self.weights.linear(p + "self_attn.k_proj.weight"),
            v=self.weights.linear(p + "self_attn.v_proj.weight"),
            o=self.weights.linear(p + "self_attn.o_proj.weight"),
            ffn_norm=self._norm_w(p + ("pre_feedforward_layernorm.weight" if gemma
                                       else "post_attention_layernorm.weight")),
            gate=self.weights.linear(p + "mlp.gate_proj.weight"),
            up=self.weights.linear(p + "mlp.up_proj.weight"),
            down=self.weights.linear(p + "mlp.down_proj.weight"),
            q_bias=g(p + "self_attn.q_proj.bias"), k_bias=g(p + "self_attn.k_proj.bias"),
            v_bias=g(p + "self_attn.v_proj.bias"), o_bias=g(p + "self_attn.o_proj.bias"),
            q_norm=self._norm_w(p + "self_attn.q_norm.weight") if self.spec.qk_norm else None,
            k_norm=self._norm_w(p + "self_attn.k_norm.weight") if self.spec.qk_norm else None,
            post_attn_norm=self._norm_w(p + "post_attention_layernorm.weight") if gemma else None,
            post_ffn_norm=self._norm_w(p + "post_feedforward_layernorm.weight") if gemma else None,
        )

    def _output(self) -> Matrix:
        name = "lm_head.weight" if "lm_head.weight" in self.weights else "model.embed_tokens.weight"
        return self.weights.linear(name)

    # -- forward ---------------------------------------------------------------------------
    def _attention(self, i: int, L: _Layer, x: np.ndarray, cache: KVCache, p0: int, rope: Rope,
                   obs: Observer | None = None) -> np.ndarray:
        s = self.spec
        T = x.shape[0]
        if obs is not None:
            obs(i, "attn_qkv", x)
        q, k, v = linear_group(x, (L.q, L.k, L.v))
        if L.q_bias is not None:
            q += L.q_bias
        if L.k_bias is not None:
            k += L.k_bias
        if L.v_bias is not None:
            v += L.v_bias
        if T == 1 and not s.attn_softcap:
            out = self._attention_one(i, L, q, k, v, cache, p0, rope)
        else:
            out = self._attention_many(i, L, q, k, v, cache, p0, rope)
        if obs is not None:
            obs(i, "attn_output", out)
        y = linear(out, L.o)
        if L.o_bias is not None:
            y += L.o_bias
        return y

    def _attention_one(self, i: int, L: _Layer, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                       cache: KVCache, p0: int, rope: Rope) -> np.ndarray:
        """A decode step's attention ``(1, heads * head_dim)``: RoPE, cache write and attention in
        one compiled call (:func:`~mlxquant.runtime.kernels.attention.attend_one`)."""
        s = self.spec
        q = q.reshape(s.n_heads, s.head_dim)
        k = k.reshape(s.n_kv_heads, s.head_dim)
        if L.q_norm is not None:
            q = rms_norm(q, L.q_norm, s.eps)
            k = rms_norm(k, L.k_norm, s.eps)
        window = s.window[i]
        start = 0 if window is None else max(0, p0 + 1 - window)
        out = np.empty((1, s.n_heads * s.head_dim), np.float32)
        args = (q, k, v.reshape(s.n_kv_heads, s.head_dim), rope.cos[0], rope.sin[0], cache.k[i],
                cache.v[i], p0, start, np.float32(s.attn_scale), out.reshape(s.n_heads, s.head_dim))
        if kernel_rows(L.q):  # the step's products are Numba's kernels too (kernels.linear)
            launch(attend_one, *args)
        else:  # BLAS's: OpenMP threads beside OpenBLAS's would fight for the cores
            attend_one_serial(*args)
        return out

    def _attention_many(self, i: int, L: _Layer, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                        cache: KVCache, p0: int, rope: Rope) -> np.ndarray:
        """Attention of ``T`` new tokens ``(T, heads * head_dim)`` (a prompt, or gemma2's softcap).

        By KV head (its ``heads // kv_heads`` query heads in one product) and block of
        ``ATTN_BLOCK`` query rows, each block reading only the keys it may see (causal). A prompt
        whose tiles are split over threads (:func:`tile_threads`) splits these items over them
        too, each thread taking the next (the costliest, last blocks first)."""
        s = self.spec
        T, H, KV, D = q.shape[0], s.n_heads, s.n_kv_heads, s.head_dim
        q = q.reshape(T, H, D).transpose(1, 0, 2)  # (H, T, D)
        k = k.reshape(T, KV, D).transpose(1, 0, 2)  # (KV, T, D)
        v = v.reshape(T, KV, D).transpose(1, 0, 2)
        if L.q_norm is not None:
            q = rms_norm(q, L.q_norm, s.eps)
            k = rms_norm(k, L.k_norm, s.eps)
        cache.k[i][:, p0:p0 + T] = apply_rope(k, rope)
        cache.v[i][:, p0:p0 + T] = v
        scale, g = np.float32(s.attn_scale), H // KV
        blocks = [(r0, min(T, r0 + ATTN_BLOCK)) for r0 in range(0, T, ATTN_BLOCK)]
        masks = {r0: _mask(p0 + r0, r1 - r0, s.window[i]) for r0, r1 in blocks}
        out = np.empty((T, H, D), np.float32)
        items = iter([(j, b) for b in reversed(blocks) for j in range(KV)])  # next() is atomic under the GIL
        # split when there is enough work: on the tiny model (4 heads x 256 x 256 x 64) the GIL
        # the items' NumPy calls take in turn ate the gain
        n = min(tile_threads(), KV * len(blocks)) if H * T * (p0 + T) * D >= SPLIT_MIN_MACS else 1
        if n == 1:  # RoPE on every head at once (on each item's slice it ran 15 % slower alone)
            q = apply_rope(q, rope)
            q *= scale

        def part(_: int) -> None:
            for j, (r0, r1) in items:
                qg = q[j * g:(j + 1) * g, r0:r1]
                if n > 1:  # RoPE on the threads too
                    qg = apply_rope(qg, Rope(rope.cos[r0:r1], rope.sin[r0:r1]))
                    qg *= scale
                o = self._attend(i, j, qg.reshape(g * (r1 - r0), D), cache, p0 + r0, masks[r0])
                out[r0:r1, j * g:(j + 1) * g] = o.reshape(g, r1 - r0, D).transpose(1, 0, 2)

        run_parts(part, n)
        return out.reshape(T, H * D)

    def _attend(self, i: int, j: int, q: np.ndarray, cache: KVCache, q0: int, mask: np.ndarray) -> np.ndarray:
        """Attention of KV head ``j``'s query heads: scaled queries ``q`` ``(g * t, D)`` (``g``
        heads of ``t`` rows each, at positions ``q0..q0 + t``) over the cached keys they may see
        (``0..q0 + t``; ``mask``: the additive ``(t, q0 + t)`` mask); ``(g * t, D)``."""
        s = self.spec
        t, S = mask.shape
        scores = q @ cache.k[i][j, :S].T  # (g * t, S)
        if s.attn_softcap:
            cap = np.float32(s.attn_softcap)
            scores = np.tanh(scores / cap) * cap
        view = scores.reshape(-1, t, S)
        view += mask
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        return scores @ cache.v[i][j, :S]

    def _mlp(self, L: _Layer, x: np.ndarray, i: int = -1, obs: Observer | None = None) -> np.ndarray:
        if obs is not None:
            obs(i, "ffn_gate_up", x)
        hidden = gated(x, L.gate, L.up, silu if self.spec.activation == "silu" else gelu_tanh)
        if obs is not None:
            obs(i, "ffn_down", hidden)
        return linear(hidden, L.down)

    def _ropes(self, p0: int, T: int) -> list[Rope]:
        """Each block's :class:`Rope` tables for positions ``p0..p0 + T``: slices of tables kept
        per distinct frequency vector (blocks sharing theirs share them), computed for positions
        ``0..n`` and recomputed for twice as many when a step goes past ``n`` (a decode step
        then costs a slice, not ~25 us of trigonometry)."""
        end = p0 + T
        out = []
        for f in self.spec.inv_freq:
            r = self._rope_tables.get(id(f))
            if r is None or r.cos.shape[0] < end:
                n = max(end, 2 * r.cos.shape[0] if r is not None else 256)
                r = self._rope_tables[id(f)] = rope_tables(f, np.arange(n))
            out.append(Rope(r.cos[p0:end], r.sin[p0:end]))
        return out

    def _block(self, i: int, h: np.ndarray, cache: KVCache, p0: int, rope: Rope,
               obs: Observer | None = None) -> np.ndarray:
        L = self._layer(i)
        norm = self._norm
        a = self._attention(i, L, norm(h, L.attn_norm), cache, p0, rope, obs)
        if L.post_attn_norm is not None:
            a = norm(a, L.post_attn_norm)
        h = h + a
        m = self._mlp(L, norm(h, L.ffn_norm), i, obs)
        if L.post_ffn_norm is not None:
            m = norm(m, L.post_ffn_norm)
        return h + m

    def _decode_blocks(self, held: _Held, h: np.ndarray, cache: KVCache, p0: int,
                       ropes: list[Rope]) -> np.ndarray:
        """Every block of a one-token step through the compiled decode block: all in one call
        (:func:`~mlxquant.runtime.kernels.step.decode_step`), or one call a block."""
        s = self.spec
        x = h[0]
        scale, eps = np.float32(s.attn_scale), np.float32(s.eps)
        gelu = s.activation == "gelu_tanh"
        threads = kernel_threads()
        # first visible position of each block (sliding windows)
        starts = [0 if w is None else max(0, p0 + 1 - w) for w in s.window]
        if held.typed is not None:
            cos = np.stack([r.cos[0] for r in ropes])
            sin = np.stack([r.sin[0] for r in ropes])
            x = launch(decode_step, x, held.typed, s.n_heads, s.n_kv_heads, cos, sin, cache.all_k,
                       cache.all_v, p0, np.array(starts, np.int64), scale, eps, gelu, threads)
            if len(decode_step.overloads) != _STEP_VERSIONS[0]:  # a version loaded or compiled
                release_ir(decode_step)
                _STEP_VERSIONS[0] = len(decode_step.overloads)
            return x[None]
        for i, plan in enumerate(held.plans):
            x = launch(decode_block, x, *plan, s.n_heads, s.n_kv_heads, ropes[i].cos[0], ropes[i].sin[0],
                       cache.k[i], cache.v[i], p0, starts[i], scale, eps, gelu, threads)
        return x[None]

    def _norm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """RMS norm of the hidden states ``x`` ``(T, hidden)``: one row (decoding) by the compiled
        :func:`~mlxquant.runtime.kernels.attention.rms_norm_row`, more by NumPy (prompts keep
        NumPy's exact float32 sums)."""
        if x.shape[0] != 1 or not x.flags.c_contiguous or x.dtype != np.float32:
            return rms_norm(x, w, self.spec.eps)
        out = np.empty_like(x)
        rms_norm_row(x[0], w, np.float32(self.spec.eps), out[0])
        return out

    def _step(self, tokens: np.ndarray, cache: KVCache, want: slice,
              obs: Observer | None = None) -> np.ndarray:
        p0 = cache.offset
        cache.reserve(len(tokens))
        h = self._embed(tokens)
        ropes = self._ropes(p0, len(tokens))
        held = self._held() if len(tokens) == 1 and obs is None else None
        if held is not None and held.plans is not None:
            h = self._decode_blocks(held, h, cache, p0, ropes)
        else:
            for i in range(self.spec.n_layers):
                h = self._block(i, h, cache, p0, ropes[i], obs)
                release_compiler_if_used()  # the block's kernels are loaded: LLVM's pages go
        cache.offset = p0 + len(tokens)
        h = h[want]
        if h.shape[0] == 0:
            return np.zeros((0, self._output().shape[0]), np.float32)
        logits = self._head(h, obs)
        release_compiler_if_used()
        return logits

    def _embed(self, tokens: np.ndarray) -> np.ndarray:
        """The hidden states ``(T, hidden)`` float32 of token ids (checked against the table)."""
        s = self.spec
        name = "model.embed_tokens.weight"
        shape = self.weights.shape(name)
        if len(shape) != 2 or shape[1] != s.hidden:
            raise FormatError(f"{self.weights.path}: tensor {name!r} has shape "
                              f"{list(shape)}, the config implies (vocab, {s.hidden})")
        if tokens.min() < 0 or tokens.max() >= shape[0]:
            raise ValueError(f"token id out of range 0..{shape[0] - 1}")
        h = self.weights.rows(name, tokens)  # a new array (scaled in place below)
        if s.embed_scale:
            h *= np.float32(s.embed_scale)
        return h

    def _head(self, h: np.ndarray, obs: Observer | None = None) -> np.ndarray:
        """Logits ``(T, vocab)`` of the last block's output: final norm, output matrix, softcap."""
        s = self.spec
        held = self._held()
        norm, out = (held.final_norm, held.output) if held is not None else \
            (self._norm_w("model.norm.weight"), self._output())
        h = self._norm(h, norm)
        if obs is not None:
            obs(-1, "output", h)
        logits = linear(h, out)
        if s.final_softcap:
            cap = np.float32(s.final_softcap)
            logits = np.tanh(logits / cap) * cap
        return logits

    def block_inputs(self, tokens: np.ndarray | list[int]) -> list[np.ndarray]:
        """The hidden states ``(T, hidden)`` entering every block of one fresh sequence of at most
        :attr:`batch` tokens, and the last block's output: ``n_layers + 1`` arrays, for
        :meth:`forward_from`."""
        toks = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if not 0 < toks.size <= self.batch:
            raise ValueError(f"block_inputs() takes 1..{self.batch} tokens, not {toks.size}")
        cache = self.new_cache(len(toks))
        cache.reserve(len(toks))
        h = self._embed(toks)
        out = [h]
        ropes = self._ropes(0, len(toks))
        for i in range(self.spec.n_layers):
            h = self._block(i, h, cache, 0, ropes[i])
            out.append(h)
        return out

    def forward_from(self, layer: int, h: np.ndarray) -> np.ndarray:
        """Logits ``(T, vocab)`` of a fresh sequence whose hidden state entering block ``layer``
        is ``h`` (from :meth:`block_inputs`; ``layer = n_layers``: only the output head): a what-if
        run after changing the weights of block ``layer`` or later costs only those blocks."""
        cache = self.new_cache(h.shape[0])
        cache.reserve(h.shape[0])
        ropes = self._ropes(0, h.shape[0])
        for i in range(layer, self.spec.n_layers):
            h = self._block(i, h, cache, 0, ropes[i])
        return self._head(h)

    def forward(self, tokens: np.ndarray | list[int], cache: KVCache | None = None,
                logits_from: int = 0, observer: Observer | None = None) -> np.ndarray:
        """Logits ``(T - logits_from, vocab)`` float32 for the next token after each of ``tokens``
        from position ``logits_from`` on (``logits_from = len(tokens) - 1``: the last only).

        ``cache`` (from :meth:`new_cache`) holds earlier positions and receives these; without
        one, a fresh cache is used (a single sequence starting at position 0). ``observer``: see
        :attr:`observer` (default: that attribute)."""
        toks = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if toks.size == 0:
            raise ValueError("forward() needs at least one token")
        cache = cache if cache is not None else self.new_cache(len(toks))
        obs = observer if observer is not None else self.observer
        outs = []
        for b0 in range(0, len(toks), self.batch):
            part = toks[b0:b0 + self.batch]
            lo = max(0, logits_from - b0)
            outs.append(self._step(part, cache, slice(lo, len(part)), obs))
        return np.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]
