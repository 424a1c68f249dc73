"""The ``mlxquant`` command's entry point (the console script and ``python -m mlxquant``).

:func:`run` installs the SIGINT / SIGTERM handlers of :mod:`mlxquant.signals` before anything
heavy (click, NumPy, Numba, MLX) is imported -- the package ``__init__`` is lazy -- and then runs
the click CLI without click's own exception handling, so an interruption at any moment, start-up
included, ends with one line on stderr (``mlxquant: error: interrupted``, status 130;
``terminated``, 143 for SIGTERM) and never a traceback. (A signal during the interpreter's own
start-up, before the console script's first import -- site-packages and ``.pth`` files, ~50 ms --
is still Python's to handle.)
"""

from __future__ import annotations

import os
import sys

from . import signals


def _main(argv: list[str] | None) -> int:
    """Import and run the click group; usage errors as click shows them (status 2)."""
    import click

    from .cli import main

    try:
        rv = main.main(args=argv, prog_name="mlxquant", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):
            raise e.__cause__ from None
        signals.say("aborted")
        return 1
    return rv if isinstance(rv, int) else 0


def run(argv: list[str] | None = None) -> int:
    """Run the ``mlxquant`` command line (``argv`` defaults to ``sys.argv[1:]``); returns the
    exit status."""
    signals.install()
    try:
        signals.arm(True)
        status = _main(argv)
        signals.arm(False)
    except SystemExit as e:
        signals.arm(False)
        status = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt as e:
        signals.arm(False)
        message, status = signals.outcome(e)
        signals.say(message)
    return status


def console() -> None:
    """The console script (``mlxquant``): :func:`run`, then exit. After an interruption the process
    leaves at once (``os._exit``, streams flushed): the outputs are already cleaned up, and a normal
    interpreter shutdown spends 1-2 s joining codec and BLAS worker threads."""
    status = run()
    if signals.received() is not None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - nothing more can be done at exit
                pass
        os._exit(status)
    sys.exit(status)
