"""The decoder graph: llama / qwen2 / qwen3 / gemma2 / gemma3 as one ONNX model with a KV cache,
in the input/output layout onnxruntime-genai feeds (its model builder's names).

Inputs: ``input_ids`` int64 ``(batch, sequence)``, ``attention_mask`` int64 ``(batch, total)``,
``position_ids`` int64 ``(batch, sequence)``, ``past_key_values.{i}.key`` / ``.value`` float32
``(batch, kv_heads, past, head_dim)``. Outputs: ``logits`` float32 ``(batch, sequence, vocab)``,
``present.{i}.key`` / ``.value`` (past and this call's keys/values concatenated along the
sequence axis, so genai runs it with ``past_present_share_buffer: false``).

The math is the NumPy runtime's (:mod:`mlxquant.runtime.numpy_model`) op for op, in float32:
RMSNorm ``x * (1 / sqrt(mean(x^2) + eps)) * w`` (gemma's ``1 + w`` folded into the weight),
rotate-half RoPE from cos/sin tables computed in float64 and gathered by ``position_ids`` (one
table per distinct set of frequencies: gemma3's local layers), queries scaled before ``Q K^T``,
grouped-query attention by reshaping the queries of each KV head into one matrix (no copy of
K/V per query head), causal + sliding-window + padding mask, optional soft-capping, SiLU or
tanh-GELU MLP.

Plain ONNX ops (opset 21) everywhere but the int4 linears, which are ``com.microsoft.MatMulNBits``:
every op here has a CPU kernel in onnxruntime and a reference meaning, so the graph can be checked
against the runtime exactly; onnxruntime's own graph optimizer fuses the norm and the
attention pattern where its kernels allow. (Its ``GroupQueryAttention`` contrib op would carry the
KV cache in a shared buffer, but its rotary and masking conventions live in C++ code, not a spec.)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..runtime.spec import ModelSpec
from .weights import BlockQuant

OPSET = 21
F32 = np.float32
NEG = float(np.finfo(np.float32).min)  # masked score: exp() gives 0 without NaN on empty rows

# a linear's weight: float32/float16 (N, K) array, or a BlockQuant (int4 / int8)
Linear = np.ndarray | BlockQuant


class GraphBuilder:
    """Nodes and initializers with unique names; :meth:`op` returns its output name(s)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._consts: dict[tuple, str] = {}

    def fresh(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        """A small shared constant initializer (ints as int64 by default)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(self.fresh("const"), arr)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "",
           name: str | None = None, **attrs: Any) -> Any:
        stem = name or op_type
        outs = [self.fresh(stem) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(stem + "_node"),
                                           domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs


def _linear(g: GraphBuilder, x: str, w: Linear, name: str, bias: np.ndarray | None = None) -> str:
    """``x @ W.T (+ bias)`` for a float weight (stored transposed, float16 ones cast at run
    time), an int4 BlockQuant (MatMulNBits) or an int8 one (blocked DequantizeLinear, MatMul)."""
    if isinstance(w, BlockQuant) and w.bits == 4:
        inputs = [x, g.init(f"{name}.qweight", w.matmulnbits_b()), g.init(f"{name}.scales", w.scales)]
        zp = w.matmulnbits_zero_points()
        if zp is not None:
            inputs.append(g.init(f"{name}.qzeros", zp))
        y = g.op("MatMulNBits", inputs, domain="com.microsoft", name=name, K=w.cols, N=w.rows,
                 bits=4, block_size=w.block_size, accuracy_level=0)
    elif isinstance(w, BlockQuant):
        qt = g.init(f"{name}.qweight", np.ascontiguousarray(w.codes[:, :w.cols].T))  # (K, N) int8
        st = g.init(f"{name}.scales", np.ascontiguousarray(w.scales.T))              # (kb, N)
        wt = g.op("DequantizeLinear", [qt, st], name=name + "_dq", axis=0, block_size=w.block_size)
        y = g.op("MatMul", [x, wt], name=name)
    else:
        wt = g.init(f"{name}.weight_t", np.ascontiguousarray(w.T))
        if w.dtype != F32:
            wt = g.op("Cast", [wt], to=TensorProto.FLOAT)
        y = g.op("MatMul", [x, wt], name=name)
    if bias is not None:
        y = g.op("Add", [y, g.init(f"{name}.bias", bias.astype(F32))])
    return y


def _rms_norm(g: GraphBuilder, x: str, w: np.ndarray, eps: float, name: str) -> str:
    ms = g.op("ReduceMean", [g.op("Mul", [x, x]), g.const([-1])], keepdims=1)
    inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [ms, g.const(eps, F32)])])])
    return g.op("Mul", [g.op("Mul", [x, inv]), g.init(name, w.astype(F32))])


def _rope(g: GraphBuilder, x: str, cos: str, sin: str, half: int) -> str:
    """Rotate-half RoPE on ``x`` ``(B, heads, S, D)``; ``cos``/``sin`` ``(B, 1, S, D/2)``."""
    x1, x2 = g.op("Split", [x, g.const([half, half])], n_out=2, axis=-1)
    a = g.op("Sub", [g.op("Mul", [x1, cos]), g.op("Mul", [x2, sin])])
    b = g.op("Add", [g.op("Mul", [x2, cos]), g.op("Mul", [x1, sin])])
    return g.op("Concat", [a, b], axis=-1)


def _softcap(g: GraphBuilder, x: str, cap: float) -> str:
    return g.op("Mul", [g.op("Tanh", [g.op("Div", [x, g.const(cap, F32)])]), g.const(cap, F32)])


def _gelu_tanh(g: GraphBuilder, x: str) -> str:
    c = float(np.sqrt(2.0 / np.pi))
    inner = g.op("Add", [x, g.op("Mul", [g.const(0.044715, F32), g.op("Mul", [g.op("Mul", [x, x]), x])])])
    t = g.op("Tanh", [g.op("Mul", [g.const(c, F32), inner])])
    return g.op("Mul", [g.op("Mul", [g.const(0.5, F32), x]), g.op("Add", [g.const(1.0, F32), t])])


def _masks(g: GraphBuilder, spec: ModelSpec) -> dict[int | None, str]:
    """Additive masks ``(B, 1, S, T)`` float32 per distinct sliding window (None = causal only):
    query ``t`` sits at position ``T - S + t``; padding (``attention_mask == 0``) is hidden."""
    s_len = g.op("Squeeze", [g.op("Shape", ["input_ids"], start=1, end=2), g.const([0])])
    t_len = g.op("Squeeze", [g.op("Shape", ["attention_mask"], start=1, end=2), g.const([0])])
    kpos = g.op("Range", [g.const(0), t_len, g.const(1)])                         # (T,)
    qpos = g.op("Range", [g.op("Sub", [t_len, s_len]), t_len, g.const(1)])       # (S,)
    qcol = g.op("Unsqueeze", [qpos, g.const([1])])                               # (S, 1)
    future = g.op("Greater", [kpos, qcol])                                       # (S, T)
    pad = g.op("Equal", ["attention_mask", g.const(0)])                          # (B, T)
    pad = g.op("Unsqueeze", [pad, g.const([1, 2])])                              # (B, 1, 1, T)
    out: dict[int | None, str] = {}
    for window in dict.fromkeys(spec.window):
        hidden = future
        if window is not None:
            far = g.op("GreaterOrEqual", [g.op("Sub", [qcol, kpos]), g.const(window)])
            hidden = g.op("Or", [hidden, far])
        hidden = g.op("Or", [hidden, pad])                                       # (B, 1, S, T)
        out[window] = g.op("Where", [hidden, g.const(NEG, F32), g.const(0.0, F32)], name="mask")
    return out


def _rope_tables(g: GraphBuilder, spec: ModelSpec) -> list[tuple[str, str]]:
    """Per layer: cos and sin ``(B, 1, S, D/2)`` gathered from float64-computed tables."""
    pos = np.arange(spec.max_context, dtype=np.float64)
    made: dict[bytes, tuple[str, str]] = {}
    per_layer = []
    for inv in spec.inv_freq:
        key = np.asarray(inv, np.float64).tobytes()
        if key not in made:
            ang = pos[:, None] * np.asarray(inv, np.float64)[None, :]
            k = len(made)
            pair = []
            for fn, label in ((np.cos, "cos"), (np.sin, "sin")):
                table = g.init(f"rope.{label}_cache_{k}", fn(ang).astype(F32))
                gathered = g.op("Gather", [table, "position_ids"], axis=0)        # (B, S, D/2)
                pair.append(g.op("Unsqueeze", [gathered, g.const([1])]))
            made[key] = (pair[0], pair[1])
        per_layer.append(made[key])
    return per_layer


def build_decoder(spec: ModelSpec, tensor: Callable[[str], np.ndarray | None],
                  linear: Callable[[str], Linear], embed: np.ndarray) -> onnx.ModelProto:
    """The decoder graph of ``spec``.

    Args:
        spec: the model's :class:`~mlxquant.runtime.spec.ModelSpec`.
        tensor: HF name -> float32 tensor (norms with gemma's offset already added, biases), or
            None when the model has no such tensor.
        linear: HF name of a matrix (``...q_proj.weight``, ``lm_head.weight``) -> its weight.
        embed: the embedding table ``(vocab, hidden)`` float32 or float16.
    """
    g = GraphBuilder()
    H, KV, D = spec.n_heads, spec.n_kv_heads, spec.head_dim
    masks = _masks(g, spec)
    ropes = _rope_tables(g, spec)
    h = g.op("Gather", [g.init("model.embed_tokens.weight", embed), "input_ids"], axis=0)
    if embed.dtype != F32:
        h = g.op("Cast", [h], to=TensorProto.FLOAT)
    if spec.embed_scale:
        h = g.op("Mul", [h, g.const(spec.embed_scale, F32)])
    presents = []
    for i in range(spec.n_layers):
        p = f"model.layers.{i}."
        x = _rms_norm(g, h, tensor(p + "input_layernorm.weight"), spec.eps, p + "input_layernorm.weight")
        heads = {}
        for role, n in (("q", H), ("k", KV), ("v", KV)):
            y = _linear(g, x, linear(p + f"self_attn.{role}_proj.weight"), p + f"self_attn.{role}_proj",
                        tensor(p + f"self_attn.{role}_proj.bias"))
            y = g.op("Reshape", [y, g.const([0, 0, n, D])])
            heads[role] = g.op("Transpose", [y], perm=[0, 2, 1, 3])                # (B, n, S, D)
        q, k, v = heads["q"], heads["k"], heads["v"]
        if spec.qk_norm:
            q = _rms_norm(g, q, tensor(p + "self_attn.q_norm.weight"), spec.eps, p + "self_attn.q_norm.weight")
            k = _rms_norm(g, k, tensor(p + "self_attn.k_norm.weight"), spec.eps, p + "self_attn.k_norm.weight")
        cos, sin = ropes[i]
        q = _rope(g, q, cos, sin, D // 2)
        k = _rope(g, k, cos, sin, D // 2)
        k_all = g.op("Concat", [f"past_key_values.{i}.key", k], axis=2, name=f"present.{i}.key")
        v_all = g.op("Concat", [f"past_key_values.{i}.value", v], axis=2, name=f"present.{i}.value")
        presents += [(f"present.{i}.key", k_all), (f"present.{i}.value", v_all)]
        q = g.op("Mul", [q, g.const(spec.attn_scale, F32)])
        qg = g.op("Reshape", [q, g.const([0, KV, -1, D])])                           # (B, KV, g*S, D)
        scores = g.op("MatMul", [qg, g.op("Transpose", [k_all], perm=[0, 1, 3, 2])])  # (B, KV, g*S, T)
        scores = g.op("Reshape", [scores, g.const([0, H, -1, 0])], allowzero=0)      # (B, H, S, T)
        if spec.attn_softcap:
            scores = _softcap(g, scores, spec.attn_softcap)
        probs = g.op("Softmax", [g.op("Add", [scores, masks[spec.window[i]]])], axis=-1)
        probs = g.op("Reshape", [probs, g.const([0, KV, -1, 0])])                   # (B, KV, g*S, T)
        o = g.op("Reshape", [g.op("MatMul", [probs, v_all]), g.const([0, H, -1, D])])  # (B, H, S, D)
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 2, 1, 3]), g.const([0, 0, H * D])])
        a = _linear(g, o, linear(p + "self_attn.o_proj.weight"), p + "self_attn.o_proj",
                    tensor(p + "self_attn.o_proj.bias"))
        if spec.sandwich_norms:
            a = _rms_norm(g, a, tensor(p + "post_attention_layernorm.weight"), spec.eps,
                          p + "post_attention_layernorm.weight")
        h = g.op("Add", [h, a])
        ffn_norm = p + ("pre_feedforward_layernorm.weight" if spec.sandwich_norms
                        else "post_attention_layernorm.weight")
        x = _rms_norm(g, h, tensor(ffn_norm), spec.eps, ffn_norm)
        gate = _linear(g, x, linear(p + "mlp.gate_proj.weight"), p + "mlp.gate_proj")
        up = _linear(g, x, linear(p + "mlp.up_proj.weight"), p + "mlp.up_proj")
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate])]) if spec.activation == "silu" else _gelu_tanh(g, gate)
        m = _linear(g, g.op("Mul", [act, up]), linear(p + "mlp.down_proj.weight"), p + "mlp.down_proj")
        if spec.sandwich_norms:
            m = _rms_norm(g, m, tensor(p + "post_feedforward_layernorm.weight"), spec.eps,
                          p + "post_feedforward_layernorm.weight")
        h = g.op("Add", [h, m])
    h = _rms_norm(g, h, tensor("model.norm.weight"), spec.eps, "model.norm.weight")
    logits = _linear(g, h, linear("lm_head.weight"), "lm_head")
    if spec.final_softcap:
        logits = _softcap(g, logits, spec.final_softcap)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits_out"))
    for name, src in presents:
        g.nodes.append(helper.make_node("Identity", [src], [name], name=name + "_out"))
    return _model(g, spec)


def _model(g: GraphBuilder, spec: ModelSpec) -> onnx.ModelProto:
    kv = ["batch_size", spec.n_kv_heads, "past_sequence_length", spec.head_dim]
    kv_out = ["batch_size", spec.n_kv_heads, "total_sequence_length", spec.head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", spec.vocab])]
    for i in range(spec.n_layers):
        for part in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{part}", TensorProto.FLOAT, kv))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{part}", TensorProto.FLOAT, kv_out))
    graph = helper.make_graph(g.nodes, "mlxquant_decoder", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              producer_name="mlxquant")
    model.ir_version = 10
    return model
