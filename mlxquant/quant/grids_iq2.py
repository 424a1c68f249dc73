"""Grids of the 2-bit and 1-bit i-quants: IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M.

Follows ggml's ``iq2xs_init_impl`` (ggml-quants.c) and the tables of ggml-common.h.

Each of these types stores a group of 8 weights as an index into a grid of 8-vectors. A grid
point is a 16-bit *code*: 8 two-bit levels ``l`` (weight ``k`` has ``l = (code >> 2k) & 3``,
always 0, 1 or 2). ggml keeps the codes in four tables, one per grid:

    ======================  =====  ===================================
    code table              size   used by
    ======================  =====  ===================================
    ``kgrid_2bit_256``        256  IQ2_XXS
    ``kgrid_2bit_512``        512  IQ2_XS
    ``kgrid_2bit_1024``      1024  IQ2_S
    ``kgrid_1bit_2048``      2048  IQ1_S, IQ1_M
    ======================  =====  ===================================

The quantizers search on odd integers ``2l + 1`` (1, 3, 5); the dequantizers of the 2-bit types
read bytes ``(8, 25, 43)[l]`` (``iq2xxs_grid``, ``iq2xs_grid``, ``iq2s_grid`` of ggml-common.h
are exactly that map over the code tables, so they are derived here, not stored). The sign
table ``ksigns_iq2xs[k]`` is ``k`` with its parity in bit 7 (an even number of minus signs per
8 weights), ``kmask_iq2xs[j] = 1 << j``.

Storage. The code tables are sorted ascending; they are kept as zlib-compressed base64 of their
first differences (little-endian uint16), decoded once at import (tests check every grid entry
against ggml's dequantization).

Search state (:func:`search_state`). A group of 8 scaled weights rounds to levels ``l`` in
0..3 (index ``sum l_k << 2k``, < 43692); if that point is on the grid the map gives its grid
index, otherwise a list of its nearest grid points (squared distance on the odd-integer
lattice), taking every point of the ``nwant`` smallest distinct distances (3 for IQ1_S/IQ1_M,
1 for IQ2_S, 2 otherwise), ordered by (distance, grid index) as ``iq2_compare_func`` sorts.
ggml builds this with a per-point qsort; here all off-grid points' distances are computed
at once with one matrix product (exact in float32: the values are small integers).
"""

from __future__ import annotations

import base64
import functools
import threading
import zlib
from dataclasses import dataclass

import numpy as np

KMAP_SIZE = 43692  # ggml's kmap_size: above 0xAAAA = 43690, the largest index with levels <= 2

_CODES_B64 = {
    "kgrid_2bit_256": (
    "eNpNkc0rRGEUxn/vHe8Y3800ZkaR6yMpFnfDTJKakkTZSFkow0psJIqampI/YkoxSSkplIUSC1K29la2UsrCRvHcO1fp"
    "ds+555znPOc554JDRI9DrWyjfFRvOviOUSffrjhGhsUgZxlgnCQryroUKBk/Gw9xUeG6AlyShTDuo0d8cbY1wVOvy4Kx"
    "IaYtnDlMkVHuSfBuq3ydwvUG89aC6R71YjoW+43xY6tqljJTHJDiLVDhkaekyj6XnFtf9QgdYnI4kb2W/wlxKU6F7WHQ"
    "bJsMm1yY29b/G8do1rzqJutSkle/lcYWcqokKAcaCtK/o+gF41R5LTfMi6OLB6ZZtz5fTHsXZIuMscy7NDi6xReznJm4"
    "8tPqf+Lb+v392mhOvZNUdKMGITe4c+7S/i5ZqdjVzfp55sP8/QuXChPMsKW6y5FxTJP5tP5t21lSdpVHXaybbpqMFznk"
    "NTrDEHuan3FyNVf8AqMtPnA="
),
    "kgrid_2bit_512": (
    "eNp9ksFLVGEUxX/fG569ZJgaGceMMZ8mgxHFw8FFbSQTUiQXgY0j6jgutIgkCpyIWeS+dRBCiC1ahrsgCFetWtSf4Npd"
    "y3Dh+b55UzPDjAzvzb333Xvuuede8Ejo53HBvRP6r0cG2/yLenJNtq8vlbacOkpzVpLAISV50RIdcW+fm/RSNed38pQz"
    "0hUjzTC7zspyVd+nqZlmNrZLLmYyTiisovMi7ilSVSRgW9GKfz6LpHIGurKIyCj6LGYbCXXftGdZxTLC3I0rjuRN8tVY"
    "z+O2vAneKKvCCUsU/dYpGn1Cp7q1AobYY5Q1zVVyKINieKS50jzgibx3LJtACFn1KUidH8p8zRU26FG02t994nbtOs/s"
    "i0GZOv8B29u03sd/bZ47y06/zKYUuivv0DRQLpHio1gX3Ax7nPqdLiiKlbNX4/GdGSEVTeMGQnULxSbQhAEfpMAdyibD"
    "LaHPqTKvmvum5jcYpRjjum5hzOSZZdtk+eu4lFn1nvKNYxYsq/5OFxAJy+IV/+07rZ6f1X9d/jXZpXirCXENuaE7m9He"
    "XvGI98bubdLV57W7nFlTfoo+SjG3rG6hpr1O80eKVI3PlFPhN1uq+cJlb5FP/GSefenU4/bbyw6HynkofW1slMfuBhf5"
    "ZQq81HQ2apVZ4a3sAz1b0vUMx8dLCw=="
),
    "kgrid_2bit_1024": (
    "eNqdVc9rE0EU/qZlGjMMDR66dmNI/FFFKoVgQaqIBw9C8FaQtFJY9SAVbclFCqWXCP4H0lvPBW968yDkT/PLzGwys7uz"
    "xrLMzM7bN9+8970fCyxhmc8SGmZe5molaWHfdPsb3l5D8hlWaHYKpxrUs5ja7DXHQYCkiDzXfWiQFVaRiXo7ipZ3ghub"
    "3j2+pox42AlselewKJffNvNIlH2Unhc+qkQLiWFKz+S9ALGFEa7zfRUr1LiPAQ5lleftErN+vFSt1/HI+n4fcUjjjXa2"
    "T9etqM//x2RMw3FaYrmPTQxFGNNe6eRZBVaKJ3hvEBL8kLFY2Xi0aI3i48dIu3t0YJ/CuolQm7sdrl3si2LGLeZZQoyx"
    "8zHFpfB5fopbzpJv+MIbX2CDmCdrIYt5bNs1taBLGdGM1Etd7PKs1SYfAubFVfNskaxQLkajCkb7uIcDYXM1dn4jejbB"
    "J/c2kXUVVV8nV8vplF6NxaKnq6wfzzJoIsrfFftHnlkT3vYZd7EvbX8Iu9K/eUrJk+XrFXuxjFjSJ3KXlXqM7zgSU8lr"
    "bOOQknWRIVubI9vO0il1Qu11nmpGthx3Q1O7jZnkZ4nJ3sI8KpzMIjIJKnAXGddnzLE/eMyzD1iRmfTt09Foz1EULt1N"
    "H/BG1OfhHr9keEkeL0Qe3Y/0dkD5czGS+R/xmquJXb6d074LrrYn7ZnZdqQp4gA3WfUpdsRv0cUpfuERvlIj4VjBW9zB"
    "XxjUTgg="
),
    "kgrid_1bit_2048": (
    "eNqNV41u4zYMFmUpdmpff7B1ThNf0wId2u0Oe53emgA9YIfu1q3YM+zNxz/Rkp3shiKNLVEU+ZH8yDjnXYV/3tUuuBa/"
    "F/jZuI7XzvBJVlrbe3KguxU+tW5wEZ+W+Imog9a9e2/nd7PzpLvBt+h6XaGbA/6Xt99BTg4o1aHUCd7ykZ/3fCPgnkj0"
    "uBvxDOh6xTrEm96do07xK+3+idIP+N2pVIOrZPvA1ka8+ZCt8SAKOz3Too4BJQBvk5UHxaY76nuDshuzdNx9iZDprPhu"
    "QZa0P6h0YBx85q1gPygWgKsJjei27pQ1Ve7NIrrQM/R+gp+tRWsPdGOriDZ4foP3Acd0xFHODhzvYOjXauevlgnzmMha"
    "m9kImWTP9wDL5lEFRqfK4p8sim6dnanVVrK8svMDrtL7GUp/hciZlfCL2V3eMuECM8WrFwFz2ZvXoz2RsW34nfZI02f3"
    "DtH27noSnZRjEbW9xDwnBJcyK6a7KdM6tiRqrBJqW5RccIT3fOO0iiPvDbO9HZxplm6LqHpekRvJoi/4TNb1RS6K7K3F"
    "32vlU4xafuu0fluOxoYz7cS9HKwwQjx5/oN+P3PMyNtbvbezGInHpHk3OTV6fKBiL6WW78xTsfkX9jQyr8kN4mXKsErz"
    "pc7i31o+SwWJNeB+s0oa0KeK2Su6G9y9wNr6HtE6n2hrNYO8IlybtsZ9cjCrpci8Ob6nLB+znlauDuSs2PzIXNtmURMe"
    "TnwIWjmC0RXKCgOLX8/Q8UqLuVgrOsuidrzmYuA8WWh+iMyara8LhvKaUUOGe9L4hrHxFnlC8gPhGHMeiuZDLPylM9f6"
    "nXh+XzCVWEE+SKxLVJONvjhBiIjOPB6PWpViy/UkZmTTjdYzoXHiPgOYDolbKPhRGCaPLBSo9Xgiz0eJO9mRIwtHWbb0"
    "bu7t9O5eYzTdGfPtUdf8hH2nulfG0FD0Kl90kCvNA1kLXJ9pZQcj8oTtEis9ryfxSOyQHE0sfKieOs67b0d9xVXTZHd0"
    "yFAB+T5yLwBlCYmlSCytrpdmP9n5JY7M21n2Jf5cuUvqwxkTdYxJpX0sqN20tsa7G5sTvvL/e84E6ZCN+1Hnl78AFFvB"
    "rc+mvmmX3aqcNywST+yzLlthLU45qMoy4r3GP9gsIQg8cW9o+S7Qqs2j5xlPwsErf3qNacDvgJ5I1C40kg3zTo19d6dI"
    "JBbqNWd9xgpSryu+pdUaDIycdz+pxqhsA9z7T/nezj1dTjtNa/2iOzofesuxaFznmYu9RrQ9Oivea/+b634FmTLfcW1I"
    "bD7QdINoLPVU8n/aA0auy2eUU56NR1tlwgnKj4H76hIx2c/6d29zL3WG/gAOqfPkc5e3OrzlSB6blUn+57nO2HHEgO2N"
    "1iEo6zdFFyrnvNoyI9qMmxh6y1Gusn62N7+2E6wqnvi9+859gtSZaH2NTyUPiX7RnTpyw/1iOuM2zDDwP7vQSiObM/zC"
    "avpRK4GqeJExU+rt5NeaZ0ngTgJOGGkPF5oDUacayiCqhBubq54LLMbZeX2AUdK02NtvLqmvZ5yCzg1V4fE764iv8Vgm"
    "ELvN80t4Waz9qEgmO25Zjt7/YOkFd4xvTYp/Q6e/v8Lsl8Xg/pnkQjkRdMV8Jj3gzaIR2OtgbEjo33H+JPZEhoSSae7/"
    "w/czndIHfkrsdY+7r+6Qlnkt/Qtzf1EF"
),
}


def _decode(blob: str) -> np.ndarray:
    deltas = np.frombuffer(zlib.decompress(base64.b64decode(blob)), dtype="<u2")
    return np.cumsum(deltas, dtype=np.uint16)


KGRID_2BIT_256: np.ndarray = _decode(_CODES_B64["kgrid_2bit_256"])      # (256,) uint16
KGRID_2BIT_512: np.ndarray = _decode(_CODES_B64["kgrid_2bit_512"])      # (512,) uint16
KGRID_2BIT_1024: np.ndarray = _decode(_CODES_B64["kgrid_2bit_1024"])    # (1024,) uint16
KGRID_1BIT_2048: np.ndarray = _decode(_CODES_B64["kgrid_1bit_2048"])    # (2048,) uint16

_CODE_TABLES = {
    "IQ2_XXS": KGRID_2BIT_256,
    "IQ2_XS": KGRID_2BIT_512,
    "IQ2_S": KGRID_2BIT_1024,
    "IQ1_S": KGRID_1BIT_2048,
    "IQ1_M": KGRID_1BIT_2048,
}
_NWANT = {"IQ2_XXS": 2, "IQ2_XS": 2, "IQ2_S": 1, "IQ1_S": 3, "IQ1_M": 3}
_SHIFTS = 2 * np.arange(8, dtype=np.int64)


def code_levels(codes: np.ndarray) -> np.ndarray:
    """The 8 two-bit levels of each code: ``(n,)`` integers -> ``(n, 8)`` uint8, weight k last."""
    return ((np.asarray(codes, dtype=np.int64)[..., None] >> _SHIFTS) & 3).astype(np.uint8)


def _dequant_grid(codes: np.ndarray) -> np.ndarray:
    grid = np.array([8, 25, 43, 0], dtype=np.uint8)[code_levels(codes)]
    grid.flags.writeable = False
    return grid


IQ2XXS_GRID: np.ndarray = _dequant_grid(KGRID_2BIT_256)    # (256, 8) uint8, ggml's iq2xxs_grid
IQ2XS_GRID: np.ndarray = _dequant_grid(KGRID_2BIT_512)     # (512, 8) uint8, ggml's iq2xs_grid
IQ2S_GRID: np.ndarray = _dequant_grid(KGRID_2BIT_1024)     # (1024, 8) uint8, ggml's iq2s_grid

_K = np.arange(128, dtype=np.uint8)
KSIGNS_IQ2XS: np.ndarray = _K | (np.unpackbits(_K[:, None], axis=1).sum(axis=1).astype(np.uint8) & 1) << 7
KMASK_IQ2XS: np.ndarray = (1 << np.arange(8)).astype(np.uint8)  # (8,) uint8
for _table in (KGRID_2BIT_256, KGRID_2BIT_512, KGRID_2BIT_1024, KGRID_1BIT_2048,
               KSIGNS_IQ2XS, KMASK_IQ2XS):
    _table.flags.writeable = False


@dataclass(frozen=True)
class Iq2Search:
    """The search state ``iq2xs_init_impl`` builds for one grid (shared by IQ1_S and IQ1_M).

    Fields (all read-only arrays):

    ``codes``: (grid_size,) uint16, the code table (``kgrid_*``).
    ``grid``: (grid_size, 8) int8, the quantizer's grid ``the_grid``: ``2*l + 1`` per weight
        (values 1, 3, 5). ``grid.view(np.uint64)`` has ggml's 64-bit words (little-endian).
    ``kmap``: (43692,) int32, ggml's ``kmap_q2xs`` after init, indexed by ``sum l_k << 2k`` for
        levels ``l_k`` in 0..3: ``>= 0`` is the grid index of an on-grid point; ``< 0`` is
        ``-(offset + 1)`` into ``neighbours`` for an off-grid point.
    ``neighbours``: (n,) uint16, ggml's ``kneighbors_q2xs``: at each offset a count ``c`` followed
        by ``c`` grid indices, the points at the ``nwant`` smallest distinct squared distances
        ordered by (distance, index).
    ``nwant``: distinct distances kept: 3 (IQ1_S, IQ1_M), 1 (IQ2_S), 2 (IQ2_XXS, IQ2_XS).
    """

    codes: np.ndarray
    grid: np.ndarray
    kmap: np.ndarray
    neighbours: np.ndarray
    nwant: int


_CHUNK = 4096  # off-grid points per distance matrix: (4096, 2048) float32 is 32 MiB


def _nearest_lists(levels: np.ndarray, codes: np.ndarray, nwant: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, counts): each point's neighbour grid indices in ggml's order.

    ``levels`` (n, 8) are the points' levels 0..3. On the odd lattice ``2l + 1`` a squared
    distance is 4x ``sum_k (l_k - l'_k)**2`` (at most 72), which is one matrix product of the
    points' one-hot levels (n, 32) with the table ``(lp - l_jk)**2`` (32, G): exact in float32.
    """
    lg = code_levels(codes).astype(np.float32)                    # (G, 8)
    lp = np.arange(4, dtype=np.float32)[:, None, None]
    table = ((lp - lg.T[None]) ** 2).transpose(1, 0, 2).reshape(32, -1)   # (8*4, G)
    onehot = np.zeros((len(levels), 8, 4), dtype=np.float32)
    onehot[np.arange(len(levels))[:, None], np.arange(8), levels] = 1
    onehot = onehot.reshape(len(levels), 32)
    rows_out, cols_out = [], []
    for lo in range(0, len(levels), _CHUNK):
        d = (onehot[lo:lo + _CHUNK] @ table).astype(np.uint8)      # (m, G) distance / 4
        level = d.min(axis=1)
        for _ in range(nwant - 1):                                 # next distinct distance
            level = np.where(d > level[:, None], d, np.uint8(255)).min(axis=1)
        r, c = np.nonzero(d <= level[:, None])                     # row-major: c ascending
        order = np.lexsort((c, d[r, c], r))
        rows_out.append(r[order] + lo)
        cols_out.append(c[order])
    rows = np.concatenate(rows_out)
    return rows, np.concatenate(cols_out), np.bincount(rows, minlength=len(levels))


@functools.cache
def _build(codes_name: str) -> Iq2Search:
    nwant = _NWANT[codes_name]
    codes = _CODE_TABLES[codes_name]
    grid = (2 * code_levels(codes) + 1).astype(np.int8)           # (G, 8) int8
    kmap = np.full(KMAP_SIZE, -1, dtype=np.int32)
    kmap[codes.astype(np.int64)] = np.arange(len(codes), dtype=np.int32)
    off = np.flatnonzero(kmap < 0)                                 # off-grid indices, ascending
    rows, cols, counts = _nearest_lists(code_levels(off), codes, nwant)
    offsets = np.concatenate(([0], np.cumsum(counts + 1)[:-1]))    # start of each point's list
    neighbours = np.empty(len(off) + len(cols), dtype=np.uint16)
    neighbours[offsets] = counts
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))          # first entry of a row in cols
    rank = np.arange(len(cols)) - first[rows]
    neighbours[offsets[rows] + 1 + rank] = cols
    kmap[off] = -(offsets + 1)
    for arr in (grid, kmap, neighbours):
        arr.flags.writeable = False
    return Iq2Search(codes=codes, grid=grid, kmap=kmap, neighbours=neighbours, nwant=nwant)


_BUILD_LOCK = threading.Lock()  # the API's worker threads ask at once: build each state once


def search_state(qtype: str) -> Iq2Search:
    """ggml's ``iq2xs_init_impl(qtype)`` state, built once per process and thread-safe.

    ``qtype`` is one of "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M" (the last two share
    one state, as in ggml). Raises KeyError for any other type. Build time on a loaded 2-core
    machine: 0.4-0.5 s for each 2-bit grid, about 2 s for the 2048-point 1-bit grid.
    """
    with _BUILD_LOCK:
        return _build("IQ1_S" if qtype == "IQ1_M" else qtype)
