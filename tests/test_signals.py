"""mlxquant.signals: an interruption that lands inside a ctypes callback (llvmlite calls one while
Numba compiles a kernel) is not lost, not printed as a traceback, and interrupts the command at
its next Python step."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import ctypes, signal, sys, time
    from mlxquant import signals

    signals.install()
    signals.arm(True)
    calls = []

    @ctypes.CFUNCTYPE(None)
    def callback():
        calls.append(1)
        signal.raise_signal(signal.SIGINT)  # our handler raises Interrupted inside the callback
        time.sleep(0.01)                    # (at the latest here)

    try:
        fn = ctypes.cast(callback, ctypes.c_void_p).value
        ctypes.CFUNCTYPE(None)(fn)()       # a foreign call into the callback: the exception is swallowed
        print("callback returned", signals.received(), flush=True)
        t0 = time.time()
        while time.time() - t0 < 10:       # the next Python steps
            sum(range(1000))
        print("not interrupted", flush=True)
        sys.exit(3)
    except signals.Interrupted as e:
        print("interrupted", e.signum, len(calls), flush=True)
        sys.exit(0)
""")


def test_interrupt_swallowed_by_a_ctypes_callback_is_raised_again():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.splitlines() == ["callback returned 2", "interrupted 2 1"], r.stdout
    assert r.stderr == "", r.stderr  # nothing printed: no "Exception ignored", no traceback


def test_other_unraisable_errors_still_printed():
    script = textwrap.dedent("""
        from mlxquant import signals
        signals.install()
        class A:
            def __del__(self):
                raise RuntimeError("boom in __del__")
        A()
        print("done")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "done\n"
    assert "boom in __del__" in r.stderr
