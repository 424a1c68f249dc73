"""Golden files: small inputs and the bytes llama.cpp's quantizer makes of them, per type.

They let the codecs be checked where the oracle is absent, and a test checks that they still
match the oracle where it is present. Regenerate with ``python -m mlxquant.testing.golden``;
``--check`` exits non-zero if the committed files no longer match the oracle.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from .inputs import imatrices, synthetic_families

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "tests" / "golden"

# The types the golden files cover (the issue #2 set, then the 1-3 bit i-quants of issue #14).
GOLDEN_TYPES = (
    "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K "
    "IQ4_NL IQ4_XS TQ1_0 TQ2_0 MXFP4 "
    "IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M"
).split()


def needs_imatrix(qtype: str) -> bool:
    """ggml quantizes IQ2_XXS, IQ2_XS and IQ1_S only with an importance matrix (it aborts
    without one): their golden files have no ``"q"`` entry."""
    from ..quant.types import get_type

    return get_type(qtype).requires_imatrix


def golden_input() -> tuple[np.ndarray, np.ndarray]:
    """(6, 256) float32 rows drawn from six input families, and a (256,) imatrix."""
    fam = synthetic_families(rows=6, cols=256)
    order = ["normal", "student_t2", "outlier", "zero_rows", "tiny", "sparse_mixed"]
    x = np.stack([fam[name][i] for i, name in enumerate(order)]).astype(np.float32)
    x[3, :] = 0.0  # a whole zero row
    return x, imatrices(256)["meansq"]


def make(qtype: str) -> dict[str, np.ndarray]:
    """``{"q": bytes without imatrix, "qw": bytes with the imatrix, "deq": float32 of "q"}``; for
    the types that need an imatrix, ``{"qw", "deq"}`` with ``"deq"`` decoded from ``"qw"``."""
    from .oracle import get_oracle

    o = get_oracle()
    x, w = golden_input()
    qw = o.quantize(x, qtype, imatrix=w)
    out = {"qw": qw} if needs_imatrix(qtype) else {"q": o.quantize(x, qtype), "qw": qw}
    src = out.get("q", qw)
    out["deq"] = o.dequantize(src, qtype, x.shape) if o.traits(qtype)["has_to_float"] else x.copy()
    return out


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def load(qtype: str, directory: Path = GOLDEN_DIR) -> dict[str, np.ndarray]:
    with np.load(directory / f"{qtype}.npz") as z:
        return {k: z[k] for k in z.files}


def stale(directory: Path = GOLDEN_DIR, types: list[str] | None = None) -> list[str]:
    """Types (of ``types``, default all) whose committed golden file differs from what the oracle gives now."""
    out = []
    for qtype in types or GOLDEN_TYPES:
        path = directory / f"{qtype}.npz"
        if not path.exists():
            out.append(f"{qtype} (missing)")
            continue
        have = load(qtype, directory)
        want = make(qtype)
        if set(have) != set(want) or any(
            have[k].tobytes() != want[k].tobytes() or have[k].shape != want[k].shape for k in want
        ):
            out.append(qtype)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=GOLDEN_DIR)
    ap.add_argument("--check", action="store_true", help="compare, don't write")
    ap.add_argument("types", nargs="*", metavar="TYPE", help="only these types (default: all of GOLDEN_TYPES)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.types) - set(GOLDEN_TYPES))
    if unknown:
        ap.error(f"not golden types: {', '.join(unknown)}")
    types = args.types or GOLDEN_TYPES
    if args.check:
        bad = stale(args.dir, types)
        print("stale golden files: " + ", ".join(bad) if bad else "golden files match the oracle")
        return 1 if bad else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for qtype in types:
        (args.dir / f"{qtype}.npz").write_bytes(_npz_bytes(make(qtype)))
    print(f"wrote {len(types)} golden files to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
