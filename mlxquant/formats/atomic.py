"""All-or-nothing outputs: write beside the target under a temporary name, rename when complete.

A conversion that fails half-way (bad input, full disk, Ctrl-C, SIGTERM) must not leave a partial
file or folder at the output path, nor overwrite an existing one unless asked to; asked to
(``force``), it replaces only what mlxquant wrote there before, never a source or a user's files
(the rule lives in :mod:`mlxquant.formats.ownership`, and is checked at the start and again at
rename time). Temporary names carry the process id (``.{name}.{pid}.{random}.partial``) so a
later run can remove what a killed one left. OS errors on the temporary path are reported under
the output path the caller gave (:class:`mlxquant.errors.OutputWriteError`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import MlxquantError, OutputExistsError, OutputWriteError, UnsafeOutputError
from .ownership import refusal, remove_stale_partials, source_overlap, temp_prefix

log = logging.getLogger(__name__)

Sources = Iterable[str | os.PathLike | None]
# errors of a write that carry no file name (f.write on a full disk): they are about the output
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def check_output(out: str | os.PathLike, force: bool, *, sources: Sources = ()) -> Path:
    """Check that ``out`` may be written; remove stale partial outputs beside it.

    An existing ``out`` is refused unless ``force``; with ``force`` it is still refused when it is
    one of ``sources`` (the conversion's inputs: model file or folder, imatrix), a folder
    containing one, a symbolic link, or not something mlxquant wrote (see
    :mod:`mlxquant.formats.ownership`). Temporary outputs in ``out``'s folder that a killed
    mlxquant process left (its PID is in their name and no longer runs) are deleted.

    Raises:
        UnsafeOutputError: ``out`` overlaps a source, or ``force`` would replace something
            mlxquant did not write, or ``out`` names no file (``.``, ``..``); one line naming
            ``out`` and the reason.
        OutputExistsError: ``out`` exists and ``force`` is False.
        FileNotFoundError: the folder that should hold ``out`` does not exist.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise UnsafeOutputError(f"{out}: not a file or folder name to write to; name the output itself")
    srcs = [s for s in sources if s is not None]
    if out.exists() or out.is_symlink():
        why = source_overlap(out, srcs)
        if why is not None:
            raise UnsafeOutputError(why)
        if not force:
            raise OutputExistsError(f"{out}: output already exists (use force=True / --force to overwrite)")
        why = refusal(out, srcs)
        if why is not None:
            raise UnsafeOutputError(why)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{parent}: output folder does not exist")
    remove_stale_partials(parent)
    return out


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:  # pragma: no cover - best effort during cleanup
        log.warning("could not remove temporary output %s: %s", path, e)


def _replace(tmp: Path, out: Path, force: bool, sources: Sources = ()) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` must pass the same rule as
    :func:`check_output` again (it may have changed while converting)."""
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputExistsError(f"{out}: output appeared while converting; not overwritten")
        why = refusal(out, [s for s in sources if s is not None])
        if why is not None:
            raise UnsafeOutputError(why)
        if out.is_dir() or tmp.is_dir():
            # a folder cannot be replaced atomically (nor a file by a folder): move the old
            # output aside under a name a later run can clean up, rename, then delete it
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=".old", dir=out.parent))
            os.rename(out, old / out.name)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old / out.name, out)
                _remove(old)
                raise
            _remove(old)
            return
    os.replace(tmp, out)


@contextlib.contextmanager
def _os_errors_name(out: Path) -> Iterator[None]:
    """Re-raise an OSError about one of ``out``'s temporary paths (or a nameless write error
    such as a full disk) as :class:`OutputWriteError` naming ``out`` itself."""
    try:
        yield
    except MlxquantError:
        raise
    except OSError as e:
        prefix = str(out.parent / temp_prefix(out))
        names = [str(n) for n in (e.filename, e.filename2) if n is not None]
        ours = any(n.startswith(prefix) for n in names) or prefix in str(e)
        if ours or (not names and e.errno in _WRITE_ERRNOS):
            raise OutputWriteError(e.errno or errno.EIO, e.strerror or str(e), str(out)) from e
        raise


@contextlib.contextmanager
def atomic_file(out: str | os.PathLike, *, force: bool = False, sources: Sources = ()) -> Iterator[Path]:
    """Yield a temporary path in ``out``'s folder; on success rename it to ``out``.

    The temporary file is deleted on any exception, including KeyboardInterrupt and OSError
    (e.g. a full disk), and the exception propagates (OS errors on the temporary file as
    :class:`OutputWriteError` naming ``out``). ``force`` and ``sources``: as in
    :func:`check_output`.
    """
    def make(out: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(out), suffix=".partial", dir=out.parent)
        os.close(fd)
        return Path(name)

    with _atomic(out, force, sources, make, 0o666) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, *, force: bool = False, sources: Sources = ()) -> Iterator[Path]:
    """Yield a new temporary folder beside ``out``; on success rename it to ``out``.

    Deleted with its contents on any exception; an existing ``out`` is replaced only when
    ``force`` is True and it is an earlier mlxquant output (see :func:`check_output`).
    """
    def make(out: Path) -> Path:
        return Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=".partial", dir=out.parent))

    with _atomic(out, force, sources, make, 0o755) as tmp:
        yield tmp


@contextlib.contextmanager
def _atomic(out: str | os.PathLike, force: bool, sources: Sources, make: Callable[[Path], Path],
            mode: int) -> Iterator[Path]:
    """The body of :func:`atomic_file` / :func:`atomic_dir`: ``make(out)`` creates the temporary
    path, which gets ``mode`` (less the umask) and replaces ``out`` when the block succeeds, and
    is deleted on any exception."""
    out = check_output(out, force, sources=sources)
    with _os_errors_name(out):
        tmp = make(out)
        try:
            yield tmp
            os.chmod(tmp, mode & ~_umask())
            _replace(tmp, out, force, sources)
        except BaseException:
            _remove(tmp)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
