"""The per-tensor types of a GGUF output: a preset with ``--tensor-type`` overrides, or an
allocation for ``--target-bpw`` / ``--target-size`` (:mod:`mlxquant.alloc`), which also leaves its recipe beside the
output: ``OUT.tensor-types.txt``, the ``--tensor-type-file`` with which ``llama-quantize`` makes
the same GGUF (``llama-quantize --imatrix IM --tensor-type-file OUT.tensor-types.txt SRC OUT
PRESET``, PRESET being the one recorded in the provenance)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import OptionError
from ..formats.atomic import atomic_file, check_output
from ..formats.ownership import RECIPE_SUFFIX
from ..models.tensor_types import TensorTypes, parse_tensor_type, recipe_lines, tensor_types_from
from .options import GGUFOptions

SIZE_ROUNDS = 8  # header-size corrections tried for target_size (two suffice on the models tried)


@dataclass(frozen=True)
class Types:
    """What decides the plan: the preset, the overrides, the provenance entries, the allocation."""

    outtype: str
    overrides: TensorTypes
    recipe: dict[str, Any]
    allocation: Any = None


def recipe_path(out: Path) -> Path:
    """Where the allocator's recipe goes: beside ``out``."""
    return out.with_name(out.name + RECIPE_SUFFIX)


def resolve_types(src: Path, out: Path, opts: GGUFOptions, force: bool,
                  progress: Callable[[int, int, str], None] | None = None,
                  size_of: Callable[[Types], int] | None = None) -> Types:
    """The preset and overrides of ``opts``; with ``target_bpw`` or ``target_size``, the
    allocation's (checking first that its recipe may be written beside ``out``). ``size_of``:
    the size of the file a :class:`Types` gives (needed for ``target_size``)."""
    if opts.target_bpw is None and opts.target_size is None:
        overrides = tensor_types_from(opts.tensor_types, opts.tensor_type_file)
        recipe = {"tensor_types": [f"{p}={t}" for p, t in overrides]} if overrides else {}
        return Types(opts.outtype, overrides, recipe)
    from ..alloc import allocate

    check_output(recipe_path(out), force, sources=[src])
    if opts.target_size is None:
        a = allocate(src, float(opts.target_bpw), opts.imatrix, opts.calib_text, progress=progress)
        return _types(a, opts)
    if size_of is None:
        raise OptionError(f"{src}: target_size is not supported for this conversion")
    from ..alloc.solve import BudgetError

    target = int(opts.target_size)
    try:
        a = allocate(src, None, opts.imatrix, opts.calib_text, tensor_bytes=target, progress=progress)
    except BudgetError as e:
        raise BudgetError(f"{src}: a file of {target:,} bytes is too small: {e}") from None
    return _within_size(a, opts, target, size_of, src)


def _within_size(a: Any, opts: GGUFOptions, target: int, size_of: Callable[[Types], int],
                 src: Path) -> Types:
    """Shrink the allocation ``a`` (made for all of ``target`` as tensor bytes) until the whole
    file fits: the header's size depends on the plan (the provenance lists every tensor's type),
    so each round takes off what the last one was over; a few rounds settle it."""
    from ..alloc.api import AllocationError
    from ..alloc.solve import BudgetError

    for _ in range(SIZE_ROUNDS):
        types = _types(a, opts, target)
        size = size_of(types)
        if size <= target:
            return types
        try:
            a = a.within(a.tensor_bytes - (size - target))
        except BudgetError:
            break
    raise AllocationError(f"{src}: no allocation fits in a file of {target:,} bytes (its smallest "
                          f"types and the header need more)")


def _types(a: Any, opts: GGUFOptions, target_size: int | None = None) -> Types:
    overrides = tuple(parse_tensor_type(line) for line in recipe_lines(a.plan))  # as the file reads
    recipe: dict[str, Any] = {"allocation": a.recipe()}
    if target_size is not None:
        recipe["allocation"]["target_size"] = target_size
    if opts.calib_text is not None:  # `mlxquant eval` refuses to evaluate on this text
        from .provenance import sha256_file

        recipe["calib_text"] = {"name": Path(opts.calib_text).name, "sha256": sha256_file(opts.calib_text)}
    return Types(a.preset, overrides, recipe, a)


def write_recipe(out: Path, types: Types, force: bool, src: Path) -> Path | None:
    """Write the allocation's recipe beside ``out`` (nothing without an allocation)."""
    if types.allocation is None:
        return None
    path = recipe_path(out)
    with atomic_file(path, force=force, sources=[src]) as tmp:
        tmp.write_text("\n".join(recipe_lines(types.allocation.plan)) + "\n", encoding="ascii")
    return path
