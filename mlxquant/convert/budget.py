"""The per-tensor types of a GGUF output: a preset with ``--tensor-type`` overrides, or an
allocation for ``--target-bpw`` (:mod:`mlxquant.alloc`), which also leaves its recipe beside the
output: ``OUT.tensor-types.txt``, the ``--tensor-type-file`` with which ``llama-quantize`` makes
the same GGUF (``llama-quantize --imatrix IM --tensor-type-file OUT.tensor-types.txt SRC OUT
PRESET``, PRESET being the one recorded in the provenance)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..formats.atomic import atomic_file, check_output
from ..formats.ownership import RECIPE_SUFFIX
from ..models.tensor_types import TensorTypes, parse_tensor_type, recipe_lines, tensor_types_from
from .options import GGUFOptions


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
                  progress: Callable[[int, int, str], None] | None = None) -> Types:
    """The preset and overrides of ``opts``; with ``target_bpw``, the allocation's (checking first
    that its recipe may be written beside ``out``)."""
    if opts.target_bpw is None:
        overrides = tensor_types_from(opts.tensor_types, opts.tensor_type_file)
        recipe = {"tensor_types": [f"{p}={t}" for p, t in overrides]} if overrides else {}
        return Types(opts.outtype, overrides, recipe)
    from ..alloc import allocate

    check_output(recipe_path(out), force, sources=[src])
    a = allocate(src, float(opts.target_bpw), opts.imatrix, opts.calib_text, progress=progress)
    overrides = tuple(parse_tensor_type(line) for line in recipe_lines(a.plan))  # as the file reads
    recipe = {"allocation": a.recipe()}
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
