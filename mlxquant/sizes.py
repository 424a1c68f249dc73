"""Byte sizes written by people: ``--memory 8GB``, ``--target-size 3.8MB``.

One convention for every option: K, M, G, T (with or without ``B``, ``iB``) are powers of 1024,
as memory is sold and as ``ls -h`` counts; a plain number is bytes.
"""

from __future__ import annotations

import re


def parse_size(text: str) -> int:
    """``"8GB"``, ``"512MiB"``, ``"1.5G"``, ``"123456"`` -> bytes (K/M/G/T powers of 1024).

    Raises:
        ValueError: text that is not a size.
    """
    m = re.fullmatch(r"\s*(\d+\.?\d*|\.\d+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read size {text!r} (e.g. 8GB, 512MiB, 3.8M, 123456)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper()))
