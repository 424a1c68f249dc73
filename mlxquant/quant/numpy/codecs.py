"""Importing this module registers every NumPy codec."""

from . import floats, fp4, iq1, iq2, iq2s, iq3, iquants, kquants_affine, kquants_symmetric, legacy, ternary  # noqa: F401
