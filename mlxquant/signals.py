"""SIGINT and SIGTERM for the ``mlxquant`` command: one line, no traceback, no partial output.

:func:`install` (called by :func:`mlxquant.entry.run` before anything heavy is imported) makes
both signals behave alike:

- while the command runs (:func:`arm`), the first SIGINT or SIGTERM raises :class:`Interrupted`
  (a KeyboardInterrupt) in the main thread, so every ``with`` block unwinds and the atomic writers
  delete their temporary outputs; the CLI then prints ``mlxquant: error: interrupted`` (SIGINT,
  exit status 130) or ``mlxquant: error: terminated`` (SIGTERM, exit status 143): 128 + the
  signal number, as a shell reports a process killed by it;
- a second signal while the first is being handled, or a signal outside the command (start-up
  before :func:`arm`, threads joining at exit), ends the process at once with the same line and
  status, printed once; partial outputs it leaves carry this process id and the next run removes
  them (:func:`mlxquant.formats.ownership.remove_stale_partials`).

Standard library only.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from types import FrameType

# signal -> (message, exit status)
OUTCOMES: dict[int, tuple[str, int]] = {
    signal.SIGINT: ("interrupted", 128 + signal.SIGINT),
    signal.SIGTERM: ("terminated", 128 + signal.SIGTERM),
}


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    """This process's signal state (one command per process)."""

    armed = False          # a first signal raises Interrupted (else: the process ends at once)
    received: int | None = None
    lost: int | None = None    # an interruption swallowed by a callback, being sent again
    main_thread = threading.main_thread().ident
    reported = False       # the one-line error has been printed


def outcome(exc: BaseException) -> tuple[str, int]:
    """The message and exit status for an interruption (a plain KeyboardInterrupt is SIGINT)."""
    return OUTCOMES[getattr(exc, "signum", signal.SIGINT)]


def received() -> int | None:
    """The signal that interrupted the command, if any."""
    return _State.received if _State.received is not None else _State.lost


def mark_reported() -> None:
    """Note that the command printed its one-line error (none is printed again at exit)."""
    _State.reported = True


def say(message: str) -> None:
    """Print ``mlxquant: error: {message}`` on stderr, unless a line was printed already."""
    if _State.reported:
        return
    _State.reported = True
    try:
        os.write(2, f"mlxquant: error: {message}\n".encode())
    except OSError:
        pass


def arm(on: bool) -> None:
    """Let the first signal raise :class:`Interrupted` (``on``), or end the process at once."""
    _State.armed = on


def _handler(signum: int, frame: FrameType | None) -> None:
    if frame is not None and frame.f_code in _DEFERRING:
        _defer(signum)  # the signal sent again reached the hook itself: once more, later
        return
    if _State.armed and _State.received is None:
        _State.received = signum
        raise Interrupted(signum)
    message, status = OUTCOMES[signum if _State.received is None else _State.received]
    say(message)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a flush interrupted mid-write cannot be helped
            pass
    os._exit(status)


def _unraisable(info: "sys.UnraisableHookArgs") -> None:
    """Python's hook for exceptions nobody can catch (raised in a ctypes callback, a __del__):
    the :class:`Interrupted` of our own handler landing there (e.g. inside llvmlite's callback
    while Numba compiles a kernel) would be lost. It is not printed, and the signal is sent again
    (:func:`_defer`) so that it interrupts the command at its next Python step. (Raising it here,
    inside the hook, would only be swallowed again.)"""
    exc = info.exc_value
    if isinstance(exc, Interrupted):
        if _State.received == exc.signum:
            _defer(exc.signum)
        return
    sys.__unraisablehook__(info)


def _defer(signum: int) -> None:
    """Have ``signum`` delivered to the main thread again from a new thread, once the main thread
    lets it run (it holds the GIL until the callback returns). ``_thread`` rather than
    ``threading``: ``Thread.start`` waits for the thread, a wait the signal could interrupt."""
    _State.lost = signum
    _State.received = None
    _thread.start_new_thread(signal.pthread_kill, (_State.main_thread, signum))


_DEFERRING = (_unraisable.__code__, _defer.__code__)


def install() -> None:
    """Install the SIGINT and SIGTERM handlers (in the main thread; elsewhere Python forbids it
    and the caller's handlers stay)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in OUTCOMES:
        signal.signal(signum, _handler)
    sys.unraisablehook = _unraisable
