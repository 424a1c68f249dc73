"""Fuzz targets: one function per reader, each calling mlxquant's public entry on an input.

A target gets the input's path (a file, or a folder with one file mutated), the case's variant
and a :class:`Context` (the pristine seeds, an empty output folder). It reads *everything* the
reader offers (every tensor decoded, every derived value computed), because a lazy reader that
validates nothing up front fails only when the data is used. Whatever it raises is classified by
the worker (:mod:`.worker`): an :class:`~mlxquant.errors.MlxquantError` is the expected outcome for
a bad input; anything else is a finding.

Targets whose ``output`` is set write into ``Context.out``; the worker then checks that nothing
is left in the output folder after a failure (no output, no ``.partial``) and only the output
after a success.

``SELF_CHECKS`` are deliberately broken targets that prove the harness can fail (a KeyError, a
sleep, a sleep with SIGALRM blocked, a 10 GB allocation, an abort, a leftover file); they are
not part of a normal campaign.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .seeds import LINEAR, convert_fn


@dataclass(frozen=True)
class Context:
    """What a target may use besides its input: pristine seeds and an empty output folder."""

    seeds: Path
    out: Path

    def seed(self, name: str) -> Path:
        return self.seeds / name


@dataclass(frozen=True)
class Target:
    """A fuzz target.

    Attributes:
        name: as given to ``--targets``.
        run: ``run(input_path, variant, context)``; raises on a bad input.
        cases: (seed name, variant, weight) to draw inputs from.
        time_limit: seconds one input may take before it counts as a hang.
        share: its share of the inputs of an ``--inputs N`` campaign (relative).
        time_share: its share of the time of a ``--seconds S`` campaign (relative).
        output: writes into ``Context.out`` (checked for leftovers).
    """

    name: str
    run: Callable[[Path, str, Context], None]
    cases: tuple[tuple[str, str, float], ...]
    time_limit: float = 5.0
    share: float = 1.0
    time_share: float = 1.0
    output: bool = False


# -- readers ----------------------------------------------------------------------------------
_DECODED: set[tuple[str, tuple[int, ...], int]] = set()  # (type, shape, hash of bytes) decoded


def run_gguf(path: Path, variant: str, ctx: Context) -> None:
    """Header check, metadata, then every tensor's stored bytes and decoded values.

    Decoding is a pure function of (type, shape, bytes): a triple this process already decoded
    without error is not decoded again (most inputs leave most tensors as they were, and some
    decoders cost milliseconds even for 512 values)."""
    from ...formats.gguf_read import GGUFModel

    with GGUFModel(path) as g:
        _ = (g.metadata, g.version, g.architecture, repr(g))
        for t in g.tensors:
            g.raw(t.name)
            key = (t.type, t.shape, hash(g.read(t.name).tobytes()))
            if key not in _DECODED:
                g.tensor(t.name)
                if len(_DECODED) > 100_000:
                    _DECODED.clear()
                _DECODED.add(key)


def run_inspect(path: Path, variant: str, ctx: Context) -> None:
    """``mlxquant.inspect`` (GGUF file or HF folder), and its JSON rendering."""
    from ...formats.inspect import inspect

    json.dumps(inspect(path), default=str)


def run_imatrix(path: Path, variant: str, ctx: Context) -> None:
    """``read_imatrix`` then the importance vector of each tensor of the model it was made for."""
    from ...formats.imatrix import importance_for, read_imatrix

    im = read_imatrix(path)
    for name, n in LINEAR.items():
        importance_for(im, name, n)
    importance_for(im, "blk.0.ffn_gate_exps.weight", 256, 2)


def run_hf(path: Path, variant: str, ctx: Context) -> None:
    """``HFModel`` (config, tokenizer config, shards, index), then every tensor."""
    from ...formats.hf import HFModel

    with HFModel(path) as m:
        _ = (m.chat_template, m.has_tokenizer, m.generation_config)
        for n in m.tensor_names:
            m.tensor(n)


def run_mlx(path: Path, variant: str, ctx: Context) -> None:
    """``MLXModel``: every tensor as stored and as float, every quantized module's parameters."""
    from ...formats.mlx_folder import MLXModel, is_mlx_folder, tokenizer_files

    is_mlx_folder(path)
    m = MLXModel(path)
    _ = m.scales_dtype
    for n in m.tensor_names:
        m.tensor(n)
    for mod in m.quantized_modules:
        m.quantized(mod)
    tokenizer_files(path)


def _config_of(folder: Path) -> dict:
    """config.json read as conversion reads it (the project's reader: a bad file is its error)."""
    from ...formats.hf import read_json

    cfg = read_json(folder / "config.json", "config.json")
    return cfg if isinstance(cfg, dict) else {}


def run_tokenizer(path: Path, variant: str, ctx: Context) -> None:
    """HF tokenizer files -> GGUF ``tokenizer.*`` metadata, as conversion does it.

    The config is given as the conversion gives it (a dict: a config.json that is not an
    object is refused before the tokenizer is read, so it is replaced by ``{}`` here)."""
    from ...formats.tokenizer import tokenizer_to_gguf

    tokenizer_to_gguf(path, _config_of(path), variant or "llama")


def run_config(path: Path, variant: str, ctx: Context) -> None:
    """config.json -> architecture, GGUF hyper-parameters, tensor names, generated tensors."""
    from ...errors import FormatError
    from ...formats.hf import read_json
    from ...models import get_architecture

    cfg = read_json(path, "config.json")
    if not isinstance(cfg, dict):
        raise FormatError(f"{path}: not a JSON object")  # what HFModel does
    arch = get_architecture(cfg)
    arch.hparams_to_gguf(cfg)
    arch.tie_word_embeddings(cfg)
    arch.extra_tensors(cfg)
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.0.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"):
        arch.tensor_name_to_gguf(name, cfg)


def run_gguf_config(path: Path, variant: str, ctx: Context) -> None:
    """GGUF metadata -> architecture, config.json and tokenizer files (GGUF -> HF/MLX)."""
    from ...formats.gguf_read import GGUFModel
    from ...formats.tokenizer_export import tokenizer_from_gguf
    from ...models import get_architecture_by_gguf

    with GGUFModel(path) as g:
        arch = get_architecture_by_gguf(g.architecture or "")
        cfg = arch.hparams_from_gguf(g.metadata, {t.name: t.shape for t in g.tensors})
        json.dumps(cfg)
        tokenizer_from_gguf(g.metadata)


def run_convert(path: Path, variant: str, ctx: Context) -> None:
    """``mlxquant.convert`` end to end into ``ctx.out``; variant ``to[:option]``, or
    ``imatrix:PRESET`` (the input is an imatrix for the pristine ``hf_model``)."""
    convert = convert_fn()
    to, _, opt = variant.partition(":")
    out = ctx.out / ("out.gguf" if to in ("gguf", "imatrix") else "out")
    if to == "imatrix":
        convert(ctx.seed("hf_model"), out, to="gguf", outtype=opt, imatrix=path)
    elif to == "mlx":
        convert(path, out, to="mlx", q_bits=int(opt) if opt else None)
    elif to == "hf":
        convert(path, out, to="hf", outtype=opt or "F16")
    else:
        convert(path, out, to="gguf", outtype=opt or "F16")


_GGUF_CASES = (("gguf_types", "", 3.0), ("gguf_model", "", 1.0), ("imatrix_gguf", "", 0.5))
_HF_CASES = (("hf_small", "", 3.0), ("hf_model", "", 1.0))
_CONFIGS = ("config_shakespeare", "config_llama", "config_qwen2", "config_qwen3", "config_gemma2",
            "config_gemma3")

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("gguf", run_gguf, _GGUF_CASES),
    Target("inspect", run_inspect, _GGUF_CASES[:2] + _HF_CASES),
    Target("imatrix", run_imatrix, (("imatrix_gguf", "", 1.0), ("imatrix_dat", "", 1.0))),
    Target("hf", run_hf, _HF_CASES),
    Target("mlx", run_mlx, (("mlx_model", "", 2.0), ("mlx_fp4", "", 1.0)), share=0.5),
    Target("tokenizer", run_tokenizer, (("tok_shakespeare", "llama", 2.0), ("tok_smollm2", "llama", 2.0),
                                        ("tok_shakespeare", "qwen2", 0.5), ("tok_smollm2", "gemma3", 0.5)),
           time_limit=10.0, share=0.2),
    Target("config", run_config, tuple((c, "", 1.0) for c in _CONFIGS)),
    Target("gguf_config", run_gguf_config, (("gguf_types", "", 1.0),)),
    Target("convert", run_convert, (
        ("hf_model", "gguf:Q8_0", 2.0), ("hf_model", "gguf:Q4_K_M", 1.0), ("hf_model", "mlx:4", 1.0),
        ("gguf_model", "hf:F16", 1.0), ("gguf_model", "gguf:Q4_0", 1.0), ("gguf_model", "mlx", 1.0),
        ("mlx_model", "gguf", 1.0), ("mlx_model", "hf:F32", 0.5), ("mlx_fp4", "gguf", 0.5),
        ("imatrix_gguf", "imatrix:Q4_K_M", 0.5), ("imatrix_dat", "imatrix:IQ4_XS", 0.5)),
        time_limit=60.0, share=0.01, time_share=0.5, output=True),
)}


# -- self-checks: targets that must produce each kind of failure -----------------------------------
def _keyerror(path: Path, variant: str, ctx: Context) -> None:
    raise KeyError("deliberate")


def _sleep(path: Path, variant: str, ctx: Context) -> None:
    time.sleep(120)


def _blocked_sleep(path: Path, variant: str, ctx: Context) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # like a long C loop
    time.sleep(120)


def _alloc(path: Path, variant: str, ctx: Context) -> None:
    import numpy as np

    np.ones(10 << 30, dtype=np.uint8)


def _abort(path: Path, variant: str, ctx: Context) -> None:
    os.abort()


def _leftover(path: Path, variant: str, ctx: Context) -> None:
    from ...errors import FormatError

    (ctx.out / ".out.gguf.x.partial").write_bytes(b"half")
    raise FormatError("deliberate, after leaving a file behind")


def _project(path: Path, variant: str, ctx: Context) -> None:
    from ...errors import FormatError

    raise FormatError("deliberate project error")


_ONE = (("config_shakespeare", "", 1.0),)
SELF_CHECKS: dict[str, Target] = {t.name: t for t in (
    Target("selfcheck_keyerror", _keyerror, _ONE),
    Target("selfcheck_project", _project, _ONE),
    Target("selfcheck_sleep", _sleep, _ONE, time_limit=1.0),
    Target("selfcheck_blocked", _blocked_sleep, _ONE, time_limit=1.0),
    Target("selfcheck_alloc", _alloc, _ONE),
    Target("selfcheck_abort", _abort, _ONE),
    Target("selfcheck_leftover", _leftover, _ONE, output=True),
)}


def get_target(name: str) -> Target:
    """A target or self-check by name (KeyError naming the known ones)."""
    t = TARGETS.get(name) or SELF_CHECKS.get(name)
    if t is None:
        raise KeyError(f"unknown fuzz target {name!r}; known: {', '.join(TARGETS)}")
    return t
