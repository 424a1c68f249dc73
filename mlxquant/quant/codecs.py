"""Importing this module registers every codec (each module registers its classes on import)."""

from . import floats  # noqa: F401
from . import legacy  # noqa: F401
from . import kquants_symmetric  # noqa: F401
from . import kquants_affine  # noqa: F401
from . import fp4, iquants, ternary  # noqa: F401

try:  # the compiled CPU codecs register where Numba is installed (a dependency)
    import numba  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    from .jit import codecs as _jit_codecs  # noqa: F401

try:  # the MLX twins register only where MLX is installed
    import mlx.core  # noqa: F401
except ImportError:  # pragma: no cover - mlx is a dependency, but keep NumPy usable without it
    pass
else:
    from .mlx import floats as _mlx_floats  # noqa: F401
    from .mlx import iquants as _mlx_iq, kquants_symmetric as _mlx_ksym  # noqa: F401
    from .mlx import kquants_affine as _mlx_kquants_affine  # noqa: F401
    from .mlx import legacy as _mlx_legacy, fp4 as _mlx_fp4, ternary as _mlx_ternary  # noqa: F401
