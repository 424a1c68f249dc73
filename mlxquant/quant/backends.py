"""The three codec backends and the lookup of a codec by (type, backend).

- ``numpy``: :mod:`mlxquant.quant.numpy`, the vectorized reference (always present);
- ``numba``: :mod:`mlxquant.quant.jit`, ggml's loops compiled for the CPU (where Numba imports);
- ``mlx``: :mod:`mlxquant.quant.mlx`, the same algorithms on ``mx.array`` (where MLX imports).

Each backend package has the same modules for the same type families (``legacy``,
``kquants_affine``, ``kquants_symmetric``, ``iquants``, ``ternary``, ``fp4``, ``floats``); its
``codecs`` module imports them all, and each codec class records itself in
:data:`mlxquant.quant.types.CODECS`. The backends are imported on the first lookup.
"""

from __future__ import annotations

from ..errors import QuantTypeError
from .types import CODECS, QuantType, get_type, set_backend_loader

_loaded = False


def load_backends() -> None:
    """Import every available backend once (registering its codecs). Python's import lock
    makes concurrent first calls safe."""
    global _loaded
    if _loaded:
        return
    from .numpy import codecs as _numpy_codecs  # noqa: F401

    try:  # the compiled CPU codecs register where Numba is installed (a dependency)
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover
        pass
    else:
        from .jit import codecs as _jit_codecs  # noqa: F401
    try:  # the MLX twins register only where MLX is installed
        import mlx.core  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency, but keep NumPy usable without it
        pass
    else:
        from .mlx import codecs as _mlx_codecs  # noqa: F401
    _loaded = True


set_backend_loader(load_backends)


def codecs_for(name: str | int | QuantType) -> tuple[str, ...]:
    """Backends with a codec for type ``name`` (``"numpy"``, ``"numba"``, ``"mlx"``)."""
    return get_type(name).codecs


def get_codec(qtype: str | int | QuantType, backend: str) -> type:
    """The codec class of ``qtype`` for ``backend``.

    Raises:
        QuantTypeError: an unknown type, or no codec of that backend for it.
    """
    load_backends()
    t = get_type(qtype)
    codec = CODECS.get((t.name, backend))
    if codec is None:
        have = ", ".join(sorted(n for (n, b) in CODECS if b == backend)) or "none"
        raise QuantTypeError(f"{t.name}: no {backend} codec (types with one: {have})")
    return codec
