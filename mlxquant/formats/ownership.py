"""What ``force`` may replace, and which leftover temporary outputs are mlxquant's own.

``force=True`` (``--force``) replaces only what mlxquant itself wrote at the output path before:

- a GGUF file whose header carries ``mlxquant.*`` metadata keys (read with the validated header
  reader, :func:`mlxquant.formats.gguf_check.check_gguf`: milliseconds, tensor data untouched);
- a folder with ``mlxquant.json`` at its top whose other entries are only files an mlxquant
  writer produces: the list the folder writer recorded in ``mlxquant.json`` (``output.files``),
  or, for folders written before that list existed, safetensors shards, their index,
  config.json and the tokenizer / generation / chat-template files; no subfolders, no links;
- an empty folder (nothing in it to lose).

Either kind may replace the other (a GGUF file an mlxquant folder, and the reverse): what is
replaced is still only mlxquant's own output.

It never replaces a source of the conversion, a folder containing one (a parent at any depth),
a symbolic link, or anything else. :func:`refusal` returns the one-line reason, or None.

Temporary outputs are named ``.{name}.{pid}.{random}.partial`` (and ``.old`` for an output moved
aside while being replaced), so a run killed by SIGKILL leaves names that a later run can prove
are its own: :func:`remove_stale_partials` deletes those whose process is no longer alive, owned
by the current user, and nothing else. (The PID is this machine's: on a folder shared between
machines a run elsewhere can look dead; its rename then fails, naming its output.)
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterable

log = logging.getLogger(__name__)

PROVENANCE_FILE = "mlxquant.json"  # same as mlxquant.convert.provenance.PROVENANCE_FILE
MAX_PROVENANCE_BYTES = 256 << 20   # a record lists every tensor: ~100 bytes each
# files an mlxquant folder writer produces (for folders whose mlxquant.json predates output.files)
WRITER_PATTERNS = ("*.safetensors", "model.safetensors.index.json", "config.json",
                   "generation_config.json", "tokenizer.json", "tokenizer.model",
                   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json")
# .{name}.{pid}.{8 random chars from tempfile}.partial|old
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[1-9][0-9]{0,9})\.[a-z0-9_]{8}\.(?:partial|old)$")


def temp_prefix(out: Path) -> str:
    """The start of every temporary name this process uses for ``out``: ``.{name}.{pid}.``."""
    return f".{out.name}.{os.getpid()}."


def refusal(out: Path, sources: Iterable[str | os.PathLike] = ()) -> str | None:
    """Why ``out`` (which exists) must not be replaced, as one line naming it; None when it may be.

    ``sources``: the conversion's inputs (model file or folder, imatrix). ``out`` is compared
    with symbolic links followed and hard links recognised.
    """
    why = source_overlap(out, sources)
    if why is not None:
        return why
    if out.is_symlink():
        return f"{out}: is a symbolic link, which mlxquant did not write; not replaced even with force"
    try:
        st = out.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return _folder_refusal(out)
    if stat.S_ISREG(st.st_mode):
        return _file_refusal(out)
    return f"{out}: is not a regular file or folder; not replaced even with force"


def source_overlap(out: Path, sources: Iterable[str | os.PathLike]) -> str | None:
    """The reason ``out`` overlaps a source (is one, or a folder holding one), or None."""
    try:
        target = out.resolve()
    except (OSError, RuntimeError):
        return None
    for s in sources:
        if s is None:
            continue
        src = Path(s)
        try:
            if _same_file(out, src) or target == src.resolve():
                also = "" if str(src) == str(out) else f" ({src})"
                return f"{out}: is the conversion's source{also}; not replaced even with force"
            if src.resolve().is_relative_to(target):
                return f"{out}: contains the conversion's source {src}; not replaced even with force"
        except (OSError, RuntimeError):
            continue
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


RECIPE_SUFFIX = ".tensor-types.txt"  # the allocator's llama-quantize recipe beside its GGUF
_RECIPE_ENTRY = re.compile(r"\^[A-Za-z0-9_.\\-]+\$=[a-z0-9_]+")
MAX_RECIPE_BYTES = 16 << 20


def _is_recipe(out: Path) -> bool:
    """A recipe mlxquant wrote: only anchored ``^name$=type`` entries (what the allocator writes)."""
    try:
        if out.stat().st_size > MAX_RECIPE_BYTES:
            return False
        words = out.read_bytes().decode("ascii").split()
    except (OSError, UnicodeDecodeError):
        return False
    return bool(words) and all(_RECIPE_ENTRY.fullmatch(w) for w in words)


def _file_refusal(out: Path) -> str | None:
    from ..errors import FormatError
    from .gguf_check import check_gguf

    if out.name.endswith(RECIPE_SUFFIX):
        if _is_recipe(out):
            return None
        return (f"{out}: is not a tensor-type recipe mlxquant wrote; not replaced even with force")

    try:
        meta = check_gguf(out).metadata
    except (FormatError, OSError, ValueError):
        meta = {}
    if any(k.startswith("mlxquant.") for k in meta):
        return None
    return (f"{out}: is not a GGUF file mlxquant wrote (no mlxquant.* metadata); "
            "not replaced even with force")


def _folder_refusal(out: Path) -> str | None:
    try:
        entries = sorted(os.scandir(out), key=lambda e: e.name)
    except OSError as e:
        return f"{out}: cannot be listed ({e.strerror}); not replaced even with force"
    if not entries:
        return None
    allowed = _written_files(out / PROVENANCE_FILE)
    if allowed is None:
        return (f"{out}: is a folder mlxquant did not write (no valid {PROVENANCE_FILE}; it holds "
                f"{entries[0].name!r}{' and more' if len(entries) > 1 else ''}); not replaced even with force")
    for e in entries:
        if e.name == PROVENANCE_FILE:
            continue
        if e.is_symlink() or not e.is_file(follow_symlinks=False):
            kind = "link" if e.is_symlink() else "folder" if e.is_dir() else "entry"
            return f"{out}: holds the {kind} {e.name!r}, which mlxquant did not write; not replaced even with force"
        if not allowed(e.name):
            return f"{out}: holds {e.name!r}, which mlxquant did not write; not replaced even with force"
    return None


def _written_files(record_path: Path) -> Callable[[str], bool] | None:
    """A predicate over file names an mlxquant writer made in this folder, or None when the
    provenance file is missing, a link, too large or not a JSON object."""
    try:
        st = record_path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PROVENANCE_BYTES:
            return None
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    listed = record.get("output", {}).get("files") if isinstance(record.get("output"), dict) else None
    if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
        names = set(listed)
        return names.__contains__
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in WRITER_PATTERNS)


def _pid_alive(pid: int) -> bool:
    """True unless the process provably does not exist (another user's process counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the temporary outputs in ``folder`` left by mlxquant runs that are no longer
    running (killed with SIGKILL, power loss): names matching ``.{name}.{pid}.{random}.partial``
    (or ``.old``) whose process ``pid`` does not exist, owned by this user, a regular file or a
    real folder (never a link). Returns what was removed; each removal is logged as a warning."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for e in entries:
        m = TEMP_NAME.match(e.name)
        if m is None or _pid_alive(int(m.group("pid"))):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if uid is not None and st.st_uid != uid:
            continue
        path = Path(e.path)
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            elif stat.S_ISREG(st.st_mode):
                path.unlink()
            else:
                continue
        except OSError as err:
            log.warning("could not remove stale partial output %s: %s", path, err)
            continue
        log.warning("removed %s: a partial output left by mlxquant process %s, which is no longer "
                    "running", path, m.group("pid"))
        removed.append(path)
    return removed
