"""Importing this module registers every codec (each module registers its classes on import)."""

from . import floats  # noqa: F401
from . import legacy  # noqa: F401
from . import kquants_symmetric  # noqa: F401
from . import kquants_affine  # noqa: F401
from . import fp4, iquants, ternary  # noqa: F401
