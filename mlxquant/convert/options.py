"""Conversion options, one object per target: :class:`GGUFOptions`, :class:`HFOptions`,
:class:`MLXOptions`.

An option exists only on the target it applies to, so ``MLXOptions(outtype="Q8_0")`` cannot be
built. :func:`options_from_keywords` turns the keyword form of :func:`mlxquant.convert.convert`
(``to="mlx", q_bits=4``) into the object and raises :class:`~mlxquant.errors.OptionError` for a
keyword that belongs to another target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Union

from ..errors import OptionError, QuantTypeError

HF_OUTTYPES = ("F32", "F16", "BF16")
MLX_MODES = ("affine", "mxfp4", "nvfp4", "mxfp8")


def _check_budget(target_bpw: float | None, target_size: int | None, max_bpw: float) -> str | None:
    """Check an allocation budget (at most one of the two; bpw within 1..``max_bpw``; a size a
    positive int); returns the option given (None: no budget)."""
    if target_bpw is not None and target_size is not None:
        raise OptionError("give either target_bpw or target_size, not both")
    if target_size is not None and (isinstance(target_size, bool) or not isinstance(target_size, int)
                                    or target_size <= 0):
        raise OptionError(f"target_size must be a positive number of bytes, not {target_size!r}")
    if target_bpw is not None and not 1.0 <= float(target_bpw) <= max_bpw:
        raise OptionError(f"target_bpw must be between 1 and {max_bpw:g} bits per weight, not {target_bpw}")
    return "target_bpw" if target_bpw is not None else "target_size" if target_size is not None else None


@dataclass(frozen=True)
class GGUFOptions:
    """Options of a GGUF output.

    Attributes:
        outtype: a llama.cpp preset (``"Q4_K_M"``, ``"Q8_0"``, ``"F16"``, ...) whose per-tensor
            type rules are applied as llama-quantize does, or a single GGML type (``"Q4_K"``: every
            quantizable tensor that type, with llama.cpp's row-size fallbacks, like
            ``llama-quantize --pure``). Default ``"F16"``. From an MLX folder: ``"AUTO"`` (each
            tensor transcoded to the nearest GGUF type, exact where possible; ``"F16"`` means
            the same).
        imatrix: llama.cpp importance-matrix file (GGUF or legacy .dat), for float sources.
        tensor_types: per-tensor overrides in llama-quantize's ``--tensor-type`` syntax,
            ``"PATTERN=TYPE"`` (the pattern a regular expression searched in the GGUF tensor name;
            the first match wins over the preset's rule; :mod:`mlxquant.models.tensor_types`).
        tensor_type_file: a llama-quantize ``--tensor-type-file`` (its entries follow
            ``tensor_types``).
        target_bpw: choose every tensor's type for this many bits per weight instead of a preset
            (:mod:`mlxquant.alloc`; a ceiling on tensor bytes x 8 / weights, as llama.cpp counts
            BPW); the recipe is written beside the output (``OUT.tensor-types.txt``).
        target_size: instead of ``target_bpw``, a ceiling on the output file's size in bytes
            (header, metadata and padding included): the allocation for the largest tensors that
            leave the file within it.
        calib_text: text on which the allocator measures each tensor's effect (recommended;
            never the text you evaluate on).
    """

    target: ClassVar[str] = "gguf"
    outtype: str = "F16"
    imatrix: str | os.PathLike | None = None
    tensor_types: tuple[str, ...] = ()
    tensor_type_file: str | os.PathLike | None = None
    target_bpw: float | None = None
    calib_text: str | os.PathLike | None = None
    target_size: int | None = None

    def __post_init__(self) -> None:
        what = _check_budget(self.target_bpw, self.target_size, 16.0)
        if what is not None:
            if self.outtype.upper() != "F16":
                raise OptionError(f"give either outtype (a preset) or {what} (an allocation), not both")
            if self.tensor_types or self.tensor_type_file is not None:
                raise OptionError(f"{what} chooses every tensor's type: it does not combine with "
                                  "tensor_types / tensor_type_file")
        elif self.calib_text is not None:
            raise OptionError("calib_text is for target_bpw / target_size (the allocator's measurements)")
        if isinstance(self.tensor_types, str):  # one "PATTERN=TYPE" given alone
            object.__setattr__(self, "tensor_types", (self.tensor_types,))
        else:
            object.__setattr__(self, "tensor_types", tuple(self.tensor_types))


@dataclass(frozen=True)
class HFOptions:
    """Options of a Hugging Face folder output: ``outtype`` is ``"F32"``, ``"F16"`` (default)
    or ``"BF16"``, the dtype of every tensor."""

    target: ClassVar[str] = "hf"
    outtype: str = "F16"


@dataclass(frozen=True)
class MLXOptions:
    """Options of an MLX folder output: mlx-lm's conversion flags, plus ``exact_scales``.

    Attributes:
        q_bits: bits per weight. None: 4 for float sources; GGUF and quantized MLX sources keep
            each tensor's own precision (exact transcoding). 0: no quantization.
        q_group_size: weights per group (default 64 affine, 32 mxfp4/mxfp8, 16 nvfp4).
        q_mode: ``"affine"`` (default), ``"mxfp4"``, ``"nvfp4"`` or ``"mxfp8"``.
        quant_predicate: mlx-lm's mixed recipe (``"mixed_3_6"``, ...), affine only.
        dtype: dtype of unquantized tensors and scales (default: config.json's ``torch_dtype``,
            float16 for GGUF sources).
        exact_scales: float32 scales, so GGUF values are reproduced bit for bit.
        target_bpw: choose every quantizable module's format (affine 2-8 bits x group 32/64/128,
            mxfp4, nvfp4, mxfp8) for this many bits per weight (:mod:`mlxquant.alloc.mlx_budget`;
            a ceiling on the folder's tensor bytes x 8 / parameters, mlx-lm's reported bits per
            weight); float sources only.
        target_size: instead of ``target_bpw``, a ceiling in bytes on the folder's weight files
            (the safetensors shards, headers included, and their index; config, tokenizer and
            provenance files are not counted).
        calib_text: text on which the allocator measures each module's effect (recommended;
            never the text you evaluate on).
        imatrix: llama.cpp importance-matrix file weighting the allocator's error estimates.
    """

    target: ClassVar[str] = "mlx"
    q_bits: int | None = None
    q_group_size: int | None = None
    q_mode: str = "affine"
    quant_predicate: str | None = None
    dtype: str | None = None
    exact_scales: bool = False
    target_bpw: float | None = None
    calib_text: str | os.PathLike | None = None
    imatrix: str | os.PathLike | None = None
    target_size: int | None = None

    def __post_init__(self) -> None:
        what = _check_budget(self.target_bpw, self.target_size, 32.0)
        if what is not None:
            if (self.q_bits is not None or self.q_group_size is not None
                    or self.quant_predicate is not None or self.q_mode != "affine"):
                raise OptionError(f"{what} chooses every module's format: it does not combine with "
                                  "q_bits / q_group_size / q_mode / quant_predicate")
        elif self.calib_text is not None or self.imatrix is not None:
            given = "imatrix" if self.imatrix is not None else "calib_text"
            raise OptionError(f"{given} applies to to='mlx' only with target_bpw or target_size (it "
                              "feeds the allocator's measurements)")

    def recipe(self) -> dict[str, Any]:
        """The options as a provenance recipe (paths as strings)."""
        return {f.name: os.fspath(v) if isinstance(v, os.PathLike) else v
                for f in fields(self) for v in [getattr(self, f.name)]}

    @property
    def explicit(self) -> bool:
        """True when a quantization was asked for (else sources keep their own precision)."""
        return (self.q_bits is not None or self.q_group_size is not None or self.target_bpw is not None
                or self.target_size is not None or self.quant_predicate is not None
                or self.q_mode != "affine")


Options = Union[GGUFOptions, HFOptions, MLXOptions]
OPTIONS: dict[str, Callable[..., Options]] = {"gguf": GGUFOptions, "hf": HFOptions, "mlx": MLXOptions}


def check_target(to: str) -> str:
    """``to`` lower-cased; OptionError unless it is ``"gguf"``, ``"hf"`` or ``"mlx"``."""
    t = str(to).lower()
    if t not in OPTIONS:
        raise OptionError(f"to must be 'gguf', 'hf' or 'mlx', not {to!r}")
    return t


def options_from_keywords(to: str, keywords: dict[str, Any]) -> Options:
    """The options object of target ``to`` from keyword arguments (None, and False for a flag,
    count as not given).

    Raises:
        OptionError: a keyword that belongs to another target, or to none.
    """
    cls = OPTIONS[check_target(to)]
    own = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in keywords.items() if v is not None and v is not False}
    for k in given:
        if k not in own:
            where = [t for t, c in OPTIONS.items() if k in {f.name for f in fields(c)}]  # type: ignore[arg-type]
            if not where:
                raise OptionError(f"unknown conversion option {k!r}")
            raise OptionError(f"option {k}={given[k]!r} does not apply to to={to!r} "
                              f"(it is a {'/'.join(where)} option; {to} takes: {', '.join(sorted(own)) or 'none'})")
    return cls(**given)


def hf_dtype(opts: HFOptions) -> str:
    """``opts.outtype`` upper-cased; QuantTypeError unless F32, F16 or BF16."""
    dt = opts.outtype.upper()
    if dt not in HF_OUTTYPES:
        raise QuantTypeError(f"--to hf writes {', '.join(HF_OUTTYPES)}, not {opts.outtype!r}")
    return dt


def option_names(to: str) -> tuple[str, ...]:
    """The option names of target ``to`` (``"gguf"``: outtype, imatrix; ...)."""
    return tuple(f.name for f in fields(OPTIONS[check_target(to)]))  # type: ignore[arg-type]
