"""Mutation strategies: bytes for containers, structure for JSON.

Binary files (GGUF, safetensors, imatrix ``.dat``) get byte flips, random and "interesting"
bytes, insertions, deletions, truncation, extension, duplicated ranges and splices with another
seed of the same kind; positions lean towards the header (where the parser works: tensor data is
just numbers). Integer fields that :mod:`.layout` located (counts, lengths, type ids, dims,
offsets) get boundary values: 0, 1, -1, 2**31 +- 1, 2**32 - 1, 2**63, 2**64 - 1, the file size,
the original +- 1, twice the original. A safetensors header is JSON: it is mutated as JSON and
written back with its length fixed (or, sometimes, not).

JSON files are parsed and mutated as trees: a node found by random descent gets a value of the
wrong type, a huge or boundary integer, inf/nan, a very long or non-UTF-8-encodable string, deep
nesting (up to 100,000 levels), a list where a dict was (and the reverse), or is deleted, or a
sibling key (from a list of keys the readers look up) is added. Sometimes the JSON text is then
byte-mutated too.

Every input is a pure function of ``(campaign seed, target, index)`` (:func:`make_input`), so an
outcome seen in a worker can be regenerated anywhere (the parent saves hangs and crashes that
way).
"""

from __future__ import annotations

import json
import math
import random
import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

from .seeds import Seed, SeedFile

BOUNDARY = (0, 1, -1, 2, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
            2**63 - 1, 2**63, 2**64 - 1)
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x22, 0x5B, 0x7B)
DEEP = "\x00__fuzz_deep__\x00"
KEYS = (
    "quantization", "quantization_config", "group_size", "bits", "mode", "tie_word_embeddings",
    "text_config", "rope_scaling", "rope_theta", "rope_parameters", "model_type", "architectures",
    "head_dim", "num_attention_heads", "num_key_value_heads", "hidden_size", "intermediate_size",
    "num_hidden_layers", "vocab_size", "weight_map", "metadata", "chat_template",
    "added_tokens_decoder", "added_tokens", "model", "merges", "vocab", "byte_fallback", "type",
    "pre_tokenizer", "pretokenizers", "dtype", "shape", "data_offsets", "__metadata__",
    "layer_types", "sliding_window", "max_position_embeddings", "rms_norm_eps", "bos_token_id",
    "eos_token_id", "pad_token_id", "add_prefix_space", "torch_dtype", "content", "special", "id",
    "use_regex", "pattern", "Regex", "individual_digits", "query_pre_attn_scalar",
    "final_logit_softcapping", "attn_logit_softcapping", "rope_local_base_freq",
    "sliding_window_pattern", "factor", "rope_type", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings", "model.layers.0.self_attn.q_proj", "total_size",
    "model.embed_tokens.weight", "lm_head.weight", "normalizer", "decoder", "post_processor",
)


@dataclass
class FuzzInput:
    """One generated input: which seed, which conversion variant, the changed files."""

    target: str
    index: int
    seed: str
    variant: str
    changes: dict[str, bytes | None]  # file -> new bytes, or None: deleted
    ops: list[str] = field(default_factory=list)


# -- values ---------------------------------------------------------------------------------------
def _value(rng: random.Random) -> Any:
    r = rng.randrange(16)
    if r == 0:
        return rng.choice((None, True, False))
    if r <= 3:
        return rng.choice(BOUNDARY) * rng.choice((1, 1, -1))
    if r == 4:
        return rng.choice((10**30, -(10**30), 10**400, 2**64 * 7))
    if r == 5:
        return rng.choice((1.5, -0.0, 1e-320, 1e308, -1e308, 0.1))
    if r == 6:
        return rng.choice((float("inf"), float("-inf"), float("nan")))
    if r == 7:
        return rng.choice(("", "x", "\ud800", "a\x00b", "../../x", "/", "model.safetensors",
                           "llama", "gemma3", "qwen2", "affine", "mxfp4", "F16", "BF16", "U32",
                           "{{ raise_exception('x') }}", "\u2581", "Ġ"))
    if r == 8:
        return "A" * rng.choice((300, 70_000, 1_000_000))
    if r == 9:
        return rng.choice(([], {}, [0], [1, 2, 3], {"a": 1}, [[1]], [None], ["x", 1]))
    if r == 10:
        return DEEP
    if r == 11:
        return [rng.choice(BOUNDARY) for _ in range(rng.randrange(1, 6))]
    if r == 12:
        return {rng.choice(KEYS): _value(rng)}
    return rng.choice((0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 3, 7, 6, 5))


def _numeric(rng: random.Random, v: int | float) -> Any:
    if isinstance(v, bool):
        return not v
    if isinstance(v, float):
        return rng.choice((v * 2, -v, 0.0, v + 1e-7, float("nan"), float("inf"),
                           int(v) if math.isfinite(v) else 0))
    make = rng.choice((lambda: v + 1, lambda: v - 1, lambda: 2 * v, lambda: -v, lambda: 0,
                       lambda: v * 1000, lambda: str(v), lambda: float(v), lambda: rng.choice(BOUNDARY)))
    try:
        return make()
    except (OverflowError, ValueError):  # float() of a huge int, str() past 4300 digits
        return rng.choice(BOUNDARY)


# -- JSON -----------------------------------------------------------------------------------------
def _descend(rng: random.Random, holder: list) -> tuple[Any, Any]:
    container, key = holder, 0
    while True:
        v = container[key]
        if isinstance(v, (dict, list)) and v and rng.random() < 0.8:
            container, key = v, (rng.choice(list(v)) if isinstance(v, dict) else rng.randrange(len(v)))
        else:
            return container, key


def mutate_json(rng: random.Random, obj: Any, ops: list[str]) -> Any:
    """Mutate a parsed JSON value in place (one structural change); returns the new root."""
    holder = [obj]
    container, key = _descend(rng, holder)
    v = container[key]
    r = rng.randrange(10)
    if r <= 3:
        container[key], op = _value(rng), "json:replace"
    elif r == 4 and isinstance(v, (int, float)):
        container[key], op = _numeric(rng, v), "json:numeric"
    elif r == 5 and container is not holder:
        del container[key]
        op = "json:delete"
    elif r == 6 and isinstance(v, dict):
        v[rng.choice(KEYS)], op = _value(rng), "json:add-key"
    elif r == 7 and isinstance(v, (dict, list)):
        container[key] = list(v.values()) if isinstance(v, dict) else {str(i): x for i, x in enumerate(v)}
        op = "json:list-dict"
    elif r == 8 and isinstance(v, list) and v:
        v.extend([v[-1]] * rng.choice((1, 1, 2, 1000))) if rng.random() < 0.5 else v.pop()
        op = "json:list-length"
    elif r == 9 and isinstance(v, str):
        container[key] = rng.choice((v + v, v[: len(v) // 2], v.upper(), v + "\ud800", v + ".", ""))
        op = "json:string"
    else:
        container[key], op = _value(rng), "json:replace"
    ops.append(op)
    return holder[0]


def dump_json(obj: Any, rng: random.Random) -> bytes:
    """JSON text (NaN/Infinity allowed, lone surrogates escaped), deep-nesting markers expanded."""
    text = json.dumps(obj, allow_nan=True, separators=rng.choice(((",", ":"), (", ", ": "))))
    marker = json.dumps(DEEP)
    while marker in text:
        d = rng.choice((64, 1000, 5000, 100_000))
        text = text.replace(marker, "[" * d + "]" * d, 1)
    return text.encode("utf-8")


# -- bytes ----------------------------------------------------------------------------------------
def _pos(rng: random.Random, n: int, header_end: int) -> int:
    if n == 0:
        return 0
    if 0 < header_end and rng.random() < 0.85:
        return rng.randrange(min(header_end, n))
    return rng.randrange(n)


def mutate_bytes(rng: random.Random, sf: SeedFile, data: bytearray, pool: Sequence[SeedFile],
                 ops: list[str]) -> bytearray:
    """One byte-level mutation of ``data`` (a copy of ``sf.data`` or an earlier mutation of it)."""
    n, end = len(data), sf.header_end
    r = rng.randrange(20)
    if r <= 5 and sf.fields:
        off, width = rng.choice(sf.fields)
        if off + width <= n:
            (orig,) = struct.unpack_from({1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[width], data, off)
            v = rng.choice(BOUNDARY + (orig + 1, orig - 1, orig * 2, n, n - off, orig ^ 0x80,
                                       rng.getrandbits(8 * width)))
            data[off:off + width] = (v % (1 << 8 * width)).to_bytes(width, "little")
            ops.append(f"field@{off}:{width}={v}")
            return data
    if r <= 8 and n:
        p = _pos(rng, n, end)
        data[p] ^= 1 << rng.randrange(8)
        ops.append(f"flip@{p}")
    elif r <= 10 and n:
        p = _pos(rng, n, end)
        data[p] = rng.choice(INTERESTING_BYTES) if rng.random() < 0.5 else rng.randrange(256)
        ops.append(f"byte@{p}")
    elif r == 11 and n >= 8:
        p = _pos(rng, n - 7, end)
        w = rng.choice((4, 8))
        data[p:p + w] = (rng.choice(BOUNDARY) % (1 << 8 * w)).to_bytes(w, "little")
        ops.append(f"int@{p}:{w}")
    elif r == 12:
        p = _pos(rng, n + 1, end)
        data[p:p] = rng.randbytes(rng.choice((1, 4, 8, 64)))
        ops.append(f"insert@{p}")
    elif r == 13 and n:
        p = _pos(rng, n, end)
        k = rng.choice((1, 4, 8, 64, 4096))
        del data[p:p + k]
        ops.append(f"delete@{p}:{k}")
    elif r == 14:
        p = _pos(rng, n + 1, end)
        del data[p:]
        ops.append(f"truncate@{p}")
    elif r == 15:
        k = rng.choice((1, 31, 32, 4096, 1 << 20))
        data += bytes(k) if rng.random() < 0.5 else rng.randbytes(min(k, 4096)) * (k // min(k, 4096))
        ops.append(f"extend+{k}")
    elif r == 16 and n > 2:
        a, b = sorted(rng.sample(range(n), 2))
        p = _pos(rng, n, end)
        data[p:p] = data[a:b][:65536]
        ops.append(f"dup{a}:{b}@{p}")
    elif r == 17 and pool:
        other = rng.choice(pool).data
        a, b = _pos(rng, n + 1, end), rng.randrange(len(other) + 1)
        data = data[:a] + bytearray(other[b:])
        ops.append(f"splice@{a}+{b}")
    elif n:
        p = _pos(rng, n, end)
        data[p:p + 8] = rng.randbytes(8)
        ops.append(f"random@{p}")
    return data


def _mutate_safetensors(rng: random.Random, sf: SeedFile, data: bytearray, ops: list[str]) -> bytearray:
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(bytes(data[8:8 + n]))
    header = mutate_json(rng, header, ops)
    blob = dump_json(header, rng)
    blob += b" " * (-len(blob) % 8)
    length = len(blob) if rng.random() < 0.9 else n
    return bytearray(struct.pack("<Q", length)) + blob + data[8 + n:]


def mutate_file(rng: random.Random, sf: SeedFile, pool: Sequence[SeedFile], ops: list[str]) -> bytes:
    """The seed file ``sf`` after 1-3 mutations suited to its kind."""
    n_ops = 1 + (rng.random() < 0.3) + (rng.random() < 0.1)
    if sf.kind == "json" and rng.random() < 0.85:
        try:
            obj = json.loads(sf.data)
        except ValueError:
            obj = None
        if obj is not None:
            for _ in range(n_ops):
                obj = mutate_json(rng, obj, ops)
            out = dump_json(obj, rng)
            if rng.random() < 0.1:
                out = bytes(mutate_bytes(rng, sf, bytearray(out), pool, ops))
            return out
    data = bytearray(sf.data)
    for i in range(n_ops):
        if sf.kind == "safetensors" and i == 0 and rng.random() < 0.6:
            data = _mutate_safetensors(rng, sf, data, ops)
        else:
            data = mutate_bytes(rng, sf, data, pool, ops)
    return bytes(data)


def _weighted(rng: random.Random, items: Sequence[Any], weights: Sequence[float]) -> Any:
    return rng.choices(items, weights)[0]


def make_input(seeds: dict[str, Seed], target: str, cases: Sequence[tuple[str, str, float]],
               campaign_seed: int, index: int) -> FuzzInput:
    """Input ``index`` of ``target``'s campaign: a case (seed, variant) and mutated file(s).

    ``cases`` are (seed name, variant, weight). Deterministic in all arguments.
    """
    rng = random.Random(f"{campaign_seed}/{target}/{index}")
    seed_name, variant, _ = _weighted(rng, cases, [c[2] for c in cases])
    seed = seeds[seed_name]
    inp = FuzzInput(target, index, seed_name, variant, {})
    if rng.random() < 0.005:
        inp.ops.append("unmutated")
        return inp
    names = list(seed.mutable)
    weights = [seed.mutable[f] for f in names]
    n_files = 1 + (seed.folder and len(names) > 1 and rng.random() < 0.1)
    for _ in range(n_files):
        rel = _weighted(rng, names, weights)
        sf = seed.files[rel]
        if seed.folder and rng.random() < 0.02:
            inp.changes[rel] = None
            inp.ops.append(f"{rel}:deleted")
            continue
        pool = [f for s in seeds.values() for f in s.files.values() if f.kind == sf.kind and f is not sf]
        ops: list[str] = []
        inp.changes[rel] = mutate_file(rng, sf, pool, ops)
        inp.ops.extend(f"{rel}:{o}" for o in ops)
    return inp
