"""All-or-nothing outputs: write beside the target under a temporary name, rename when complete.

A conversion that fails half-way (bad input, full disk, Ctrl-C) must not leave a partial file or
folder at the output path, nor overwrite an existing one unless asked to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import OutputExistsError

log = logging.getLogger(__name__)


def check_output(out: str | os.PathLike, force: bool) -> Path:
    """Refuse an existing ``out`` unless ``force``; refuse a missing parent folder.

    Raises:
        OutputExistsError: ``out`` exists and ``force`` is False.
        FileNotFoundError: the folder that should hold ``out`` does not exist.
    """
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not force:
        raise OutputExistsError(f"{out}: output already exists (use force=True / --force to overwrite)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{parent}: output folder does not exist")
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


def _replace(tmp: Path, out: Path, force: bool) -> None:
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputExistsError(f"{out}: output appeared while converting; not overwritten")
        if out.is_dir() and not out.is_symlink():
            # a directory cannot be replaced atomically: move it aside, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(tmp, out)
            _remove(old)
            return
    os.replace(tmp, out)


@contextlib.contextmanager
def atomic_file(out: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``out``'s folder; on success rename it to ``out``.

    The temporary file is deleted on any exception, including KeyboardInterrupt and OSError
    (e.g. a full disk), and the exception propagates.
    """
    out = check_output(out, force)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        _replace(tmp, out, force)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a new temporary folder beside ``out``; on success rename it to ``out``.

    Deleted with its contents on any exception; an existing ``out`` is replaced only when
    ``force`` is True.
    """
    out = check_output(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755 & ~_umask())
        _replace(tmp, out, force)
    except BaseException:
        _remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
