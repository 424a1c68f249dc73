"""Importing this module registers every NumPy codec."""

from . import floats, fp4, iquants, kquants_affine, kquants_symmetric, legacy, ternary  # noqa: F401
