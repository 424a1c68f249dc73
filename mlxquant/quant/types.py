"""The registry of GGML tensor types: one place for names, ids, block geometry and imatrix needs.

Every type llama.cpp's ggml defines (ggml.h, ``enum ggml_type``) is listed, including those that
mlxquant has no codec for. Codec classes record themselves here as their modules are imported
(:func:`register_codec`); :mod:`mlxquant.quant.backends` imports the backends and answers which
codecs exist (:func:`~mlxquant.quant.backends.codecs_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import QuantTypeError


@dataclass(frozen=True)
class QuantType:
    """A GGML tensor type.

    Attributes:
        name: llama.cpp's spelling, e.g. ``"Q4_K"``.
        id: the numeric ``ggml_type`` value stored in GGUF files.
        block_size: weights per block.
        type_size: bytes per block.
        requires_imatrix: ggml refuses to quantize the type without an importance matrix.
        uses_imatrix: ggml's quantizer for the type reads the importance matrix when given one.
    """

    name: str
    id: int
    block_size: int
    type_size: int
    requires_imatrix: bool = False
    uses_imatrix: bool = False

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size

    @property
    def is_quantized(self) -> bool:
        return self.block_size > 1

    def row_bytes(self, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` weights (must be a multiple of ``block_size``)."""
        return n_per_row // self.block_size * self.type_size

    @property
    def codecs(self) -> tuple[str, ...]:
        """Backends with a codec for this type (``"numpy"``, ``"numba"``, ``"mlx"``)."""
        if _load_backends is not None:
            _load_backends()
        return tuple(b for (n, b) in CODECS if n == self.name)


QK_K = 256

#              name       id  block  bytes  requires  uses
_TABLE: list[tuple[str, int, int, int, bool, bool]] = [
    ("F32",      0,   1,    4, False, False),
    ("F16",      1,   1,    2, False, False),
    ("Q4_0",     2,  32,   18, False, True),   # d:f16, qs[16]
    ("Q4_1",     3,  32,   20, False, True),   # d:f16, m:f16, qs[16]
    ("Q5_0",     6,  32,   22, False, True),   # d:f16, qh[4], qs[16]
    ("Q5_1",     7,  32,   24, False, True),   # d:f16, m:f16, qh[4], qs[16]
    ("Q8_0",     8,  32,   34, False, False),  # d:f16, qs[32] int8
    ("Q8_1",     9,  32,   36, False, False),  # d:f16, s:f16, qs[32] int8
    ("Q2_K",    10, QK_K,  84, False, True),
    ("Q3_K",    11, QK_K, 110, False, True),
    ("Q4_K",    12, QK_K, 144, False, True),
    ("Q5_K",    13, QK_K, 176, False, True),
    ("Q6_K",    14, QK_K, 210, False, True),
    ("Q8_K",    15, QK_K, 292, False, False),  # d:f32, qs[256], bsums[16] i16
    ("IQ2_XXS", 16, QK_K,  66, True,  True),
    ("IQ2_XS",  17, QK_K,  74, True,  True),
    ("IQ3_XXS", 18, QK_K,  98, False, True),
    ("IQ1_S",   19, QK_K,  50, True,  True),
    ("IQ4_NL",  20,  32,   18, False, True),
    ("IQ3_S",   21, QK_K, 110, False, True),
    ("IQ2_S",   22, QK_K,  82, False, True),
    ("IQ4_XS",  23, QK_K, 136, False, True),
    ("I8",      24,   1,    1, False, False),
    ("I16",     25,   1,    2, False, False),
    ("I32",     26,   1,    4, False, False),
    ("I64",     27,   1,    8, False, False),
    ("F64",     28,   1,    8, False, False),
    ("IQ1_M",   29, QK_K,  56, False, True),
    ("BF16",    30,   1,    2, False, False),
    ("TQ1_0",   34, QK_K,  54, False, False),
    ("TQ2_0",   35, QK_K,  66, False, False),
    ("MXFP4",   39,  32,   17, False, False),  # e:E8M0, qs[16]
    ("NVFP4",   40,  64,   36, False, False),  # d[4]:UE4M3, qs[32]
    ("Q1_0",    41, 128,   18, False, False),
    ("Q2_0",    42,  64,   18, False, False),
]

TYPES: dict[str, QuantType] = {
    row[0]: QuantType(*row) for row in _TABLE
}
TYPES_BY_ID: dict[int, QuantType] = {t.id: t for t in TYPES.values()}

# Filled by codec modules as they are imported: (type name, backend) -> codec class.
CODECS: dict[tuple[str, str], type] = {}
# Imports every backend; set by mlxquant.quant.backends (which imports this module, not the
# other way round), always loaded with the package.
_load_backends: Callable[[], None] | None = None


def set_backend_loader(load: Callable[[], None]) -> None:
    """Install the function that imports every codec backend (:mod:`mlxquant.quant.backends`
    does, on import), so that :attr:`QuantType.codecs` sees them all."""
    global _load_backends
    _load_backends = load


def get_type(qtype: str | int | QuantType) -> QuantType:
    """Look a type up by llama.cpp name (case-insensitive), numeric id, or pass one through."""
    if isinstance(qtype, QuantType):
        return qtype
    if isinstance(qtype, (int,)) and not isinstance(qtype, bool):
        try:
            return TYPES_BY_ID[qtype]
        except KeyError:
            raise QuantTypeError(f"unknown GGML type id {qtype}") from None
    if isinstance(qtype, str):
        t = TYPES.get(qtype.upper())
        if t is not None:
            return t
    raise QuantTypeError(
        f"unknown quantization type {qtype!r}; known: {', '.join(TYPES)}"
    )


def register_codec(name: str, backend: str, codec: type) -> None:
    """Record ``codec`` as the ``backend`` codec of type ``name`` (once per pair)."""
    key = (get_type(name).name, backend)
    if key in CODECS:
        raise RuntimeError(f"codec for {key} registered twice")
    CODECS[key] = codec
