"""``load_gguf``: a GGUF file as an mlx-lm model whose layers keep each tensor's GGUF type.

The model is mlx-lm's own class for the architecture (``mlx_lm.utils._get_classes`` on the HF
config that :mod:`mlxquant.models` derives from the GGUF metadata). GGUF names, the Q/K row
un-permutation and gemma's norm offset come from the architecture maps through
:class:`~mlxquant.convert.sources.GGUFSource`; names then go through the model's own
``sanitize`` (which also decides, e.g. for gemma3, whether the output head is tied), so each
``nn.Linear`` / ``nn.Embedding`` is replaced by a :class:`~.layers.GGUFLinear` /
:class:`~.layers.GGUFEmbedding` holding its tensor as the file stores it (:mod:`.weights`), and
every other parameter (norms, biases) is loaded as float32.

The tokenizer is the GGUF's, exported to Hugging Face files in a temporary folder and loaded
by mlx-lm (an ``mlx_lm.tokenizer_utils.TokenizerWrapper``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..convert.sources import GGUFSource, row_permutation
from ..errors import FormatError, UnsupportedArchitectureError
from .layers import GGUFEmbedding, GGUFLinear
from .weights import GGUFWeight, plan_weight

log = logging.getLogger(__name__)


class _TensorSource(GGUFSource):
    """:class:`GGUFSource` without the tokenizer export, for files with no tokenizer (GGUFSource
    always exports it): the same config, names, shapes and tensors."""

    def __init__(self, src: Path):
        from ..formats.gguf_read import GGUFModel
        from ..models import get_architecture_by_gguf

        self.g = GGUFModel(src)
        self.arch = get_architecture_by_gguf(self.g.architecture or "")
        rope = self.g.tensor("rope_freqs.weight") if "rope_freqs.weight" in self.g else None
        self.config = self.arch.hparams_from_gguf(self.g.metadata, [t.name for t in self.g.tensors], rope)
        self.files = {}
        embd = self.g.info("token_embd.weight").shape if "token_embd.weight" in self.g else None
        if "vocab_size" not in self.config and embd is not None:
            self.config["vocab_size"] = int(embd[0])   # (the tokenizer's count, when there is one)
        self.gname = {h: t.name for t in self.g.tensors
                      if (h := self.arch.tensor_name_from_gguf(t.name)) is not None}
        self.names = list(self.gname)
        self.shapes = {h: tuple(self.g.info(gn).shape) for h, gn in self.gname.items()}
        self.kind = {h: self.g.info(gn).qtype.name for h, gn in self.gname.items()}
        self.default_dtype = "float16"


def open_source(path: Path, tokenizer: bool = True) -> GGUFSource:
    """The GGUF file as a tensor source (with its tokenizer files when ``tokenizer``)."""
    return GGUFSource(path) if tokenizer else _TensorSource(path)


def build_model(config: dict[str, Any], where: Path) -> nn.Module:
    """mlx-lm's model for an HF ``config`` (its ``model_type``), freshly initialized."""
    from mlx_lm.utils import _get_classes

    try:
        model_cls, args_cls = _get_classes(config)
    except ValueError as e:
        raise UnsupportedArchitectureError(f"{where}: mlx-lm has no model for "
                                           f"{config.get('model_type')!r} ({e})") from None
    return model_cls(args_cls.from_dict(config))


def model_names(model: nn.Module, src: GGUFSource) -> dict[str, str]:
    """mlx-lm parameter name -> HF name, through the model's ``sanitize`` on placeholders
    (lazy zeros, never evaluated); a tensor that sanitize transforms rather than renames raises."""
    placeholders = {n: mx.zeros(src.shapes[n], dtype=mx.uint8) for n in src.names}
    if not hasattr(model, "sanitize"):
        return {n: n for n in src.names}
    by_id = {id(a): n for n, a in placeholders.items()}
    out = {}
    for name, a in model.sanitize(dict(placeholders)).items():
        if id(a) not in by_id:
            raise FormatError(f"{src.g.path}: mlx-lm's sanitize transforms {name!r}; "
                              "its GGUF type cannot be kept")
        out[name] = by_id[id(a)]
    return out


def gguf_weight(src: GGUFSource, hf_name: str) -> GGUFWeight:
    """One 2-D tensor of ``src`` in its MLX form, rows in the Hugging Face layout."""
    gn = src.gname[hf_name]
    info = src.g.info(gn)
    raw = src.g.read(gn)
    perm = row_permutation(lambda a: src.arch.tensor_from_gguf(gn, a, src.config), raw.shape[0],
                           f"{src.g.path}: tensor {gn!r}")
    if perm is not None:
        raw = raw[perm]
    return plan_weight(raw, info.qtype.name, int(info.shape[-1]), f"{src.g.path}: tensor {gn!r}")


def _tokenizer(src: GGUFSource, config: dict[str, Any]) -> Any:
    from mlx_lm.utils import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="mlxquant-tok-") as tmp:
        for name, content in src.files.items():
            data = content if isinstance(content, (bytes, str)) else json.dumps(content)
            mode = "wb" if isinstance(data, bytes) else "w"
            with open(os.path.join(tmp, name), mode) as f:
                f.write(data)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f)
        eos = config.get("eos_token_id")
        return load_tokenizer(Path(tmp), eos_token_ids=[eos] if isinstance(eos, int) else eos)


def replace_layers(model: nn.Module, src: GGUFSource, names: dict[str, str]) -> set[str]:
    """Swap every ``nn.Linear`` / ``nn.Embedding`` of ``model`` for a GGUF layer holding its tensor
    (``names``: mlx-lm parameter name -> HF name); returns the parameter names now loaded."""
    modules: list[tuple[str, nn.Module]] = []
    loaded: set[str] = set()
    for mpath, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Embedding)):
            continue
        hf = names.get(f"{mpath}.weight")
        if hf is None:
            raise FormatError(f"{src.g.path}: no tensor for mlx-lm module {mpath!r}")
        w = gguf_weight(src, hf)
        if isinstance(mod, nn.Embedding):
            modules.append((mpath, GGUFEmbedding(w)))
        else:
            bias_hf = names.get(f"{mpath}.bias")
            bias = None if bias_hf is None else mx.array(src.float(bias_hf))
            modules.append((mpath, GGUFLinear(w, bias)))
            if bias_hf is not None:
                loaded.add(f"{mpath}.bias")
        loaded.add(f"{mpath}.weight")
    model.update_modules(tree_unflatten(modules))
    return loaded


def load_gguf(path: str | os.PathLike, tokenizer: bool = True) -> tuple[nn.Module, Any]:
    """Load a GGUF file as ``(model, tokenizer)`` for mlx-lm (``generate``, ``stream_generate``).

    Linear and embedding weights keep their GGUF types, mixed per tensor as in the file; other
    parameters are float32. ``tokenizer=False`` returns ``(model, None)``.

    Raises:
        FormatError, UnsupportedArchitectureError, TokenizerError, QuantInputError: the file
        cannot be read or has no mlx-lm equivalent (the message names the file and tensor).
    """
    path = Path(path)
    src = open_source(path, tokenizer)
    try:
        config = dict(src.config)
        model = build_model(config, path)
        names = model_names(model, src)
        wanted = {n for n, _ in tree_flatten(model.parameters())}
        loaded = replace_layers(model, src, names)
        rest = [(n, mx.array(np.ascontiguousarray(src.float(hf), dtype=np.float32)))
                for n, hf in names.items() if n not in loaded]
        extra = sorted({n for n, _ in rest} - wanted)
        missing = sorted(wanted - loaded - {n for n, _ in rest})
        if extra or missing:
            raise FormatError(f"{path}: the file does not fit mlx-lm's {config.get('model_type')} "
                              f"model (no place for: {', '.join(extra[:4]) or '-'}; "
                              f"no tensor for: {', '.join(missing[:4]) or '-'})")
        model.update(tree_unflatten(rest))
        forms = Counter(f"{m.qtype}:{m.form}" for _, m in model.named_modules()
                        if isinstance(m, (GGUFLinear, GGUFEmbedding)))
        log.info("%s: %s", path.name, ", ".join(f"{n} {k}" for k, n in sorted(forms.items())))
        model.eval()
        mx.eval(model.parameters())
        tok = _tokenizer(src, config) if tokenizer else None
    finally:
        src.g.close()
    return model, tok


def model_nbytes(model: nn.Module) -> int:
    """Bytes of every array the model holds (its weights as loaded)."""
    return sum(a.nbytes for _, a in tree_flatten(model.parameters()))
