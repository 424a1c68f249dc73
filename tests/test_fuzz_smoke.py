"""The fuzz harness (issue 11): a CI smoke campaign over every target, and checks that the
harness itself can fail (a broken target is non-project, a sleeping one a hang, a 10 GB
allocation a MemoryError, an abort a crash, a left-over file a leftover).

The smoke campaign is deterministic (fixed seed, fixed inputs per target) and sized for ~1-2
minutes on 2 cores; the long campaign is ``python benchmarks/fuzz.py --inputs 1000000``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import need

# inputs per target: cheap readers get thousands, conversion end to end a few dozen
SMOKE_QUOTAS = {"gguf": 1500, "inspect": 1000, "imatrix": 2000, "hf": 800, "mlx": 500,
                "tokenizer": 200, "config": 1500, "gguf_config": 1500, "convert": 40}


def _have_models() -> bool:
    from mlxquant.testing.fuzz.seeds import _sources

    try:
        _sources()
    except FileNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(_have_models(), "tiny-shakespeare-llama (tests/data or shared/models)")
    from mlxquant.testing.fuzz.seeds import build_seeds

    root = tmp_path_factory.mktemp("fuzz") / "seeds"
    build_seeds(root)
    return root


def test_smoke_campaign(seeds_root: Path, tmp_path: Path) -> None:
    from mlxquant.testing.fuzz import run_campaign
    from mlxquant.testing.fuzz.report import findings_markdown

    res = run_campaign(list(SMOKE_QUOTAS), quotas=SMOKE_QUOTAS, workers=2, seed=0,
                       findings_dir=tmp_path / "findings", seeds_root=seeds_root)
    for name, n in SMOKE_QUOTAS.items():
        assert res.stats[name].inputs == n, name
    if res.failed:
        pytest.fail("\n" + findings_markdown(res, "Fuzz smoke campaign: findings"), pytrace=False)


def test_self_checks_are_classified(seeds_root: Path, tmp_path: Path) -> None:
    """Each deliberately broken target produces exactly its kind of outcome."""
    from mlxquant.testing.fuzz import SELF_CHECKS, run_campaign

    res = run_campaign(list(SELF_CHECKS), quotas=dict.fromkeys(SELF_CHECKS, 2), workers=2, seed=0,
                       findings_dir=tmp_path / "findings", seeds_root=seeds_root)
    expect = {"selfcheck_keyerror": "nonproject", "selfcheck_project": "project",
              "selfcheck_sleep": "hang", "selfcheck_blocked": "hang", "selfcheck_alloc": "memory",
              "selfcheck_abort": "crash"}
    for name, kind in expect.items():
        c = res.stats[name].counts
        assert c[kind] == 2, (name, c)
        assert sum(c.values()) == 2, (name, c)
    left = res.stats["selfcheck_leftover"].counts
    assert left["project"] == 2 and left["leftover"] == 2, left
    assert res.failed
    keys = {f["key"] for f in res.findings.values()}
    assert "nonproject:selfcheck_keyerror:KeyError@-" in keys  # deduplicated: one key, 2 inputs
    assert res.findings["nonproject:selfcheck_keyerror:KeyError@-"]["count"] == 2
    saved = sorted(p.name for p in (tmp_path / "findings").iterdir())
    for kind in ("nonproject", "hang", "memory", "crash", "leftover"):
        assert any(s.startswith(kind + "-") for s in saved), (kind, saved)
    rec = json.loads(next((tmp_path / "findings").glob("nonproject-*/finding.json")).read_text())
    assert rec["type"] == "KeyError" and rec["replay"].startswith("python benchmarks/fuzz.py --replay")


def test_classify_and_frames() -> None:
    from mlxquant.errors import FormatError
    from mlxquant.testing.fuzz.worker import FuzzTimeout, classify

    assert classify(FormatError("x"), "t").kind == "project"
    assert classify(FuzzTimeout(), "t").kind == "hang"
    assert classify(MemoryError(), "t").kind == "memory"
    try:
        {}["missing"]
    except KeyError as e:
        o = classify(e, "t")
    assert o.kind == "nonproject" and o.key.startswith("nonproject:t:KeyError@")


def test_inputs_are_reproducible(seeds_root: Path) -> None:
    from mlxquant.testing.fuzz.mutate import make_input
    from mlxquant.testing.fuzz.seeds import load_seeds
    from mlxquant.testing.fuzz.targets import TARGETS

    seeds = load_seeds(seeds_root)
    for name, t in TARGETS.items():
        for i in random.Random(0).sample(range(10_000), 20):
            a = make_input(seeds, name, t.cases, 7, i)
            b = make_input(seeds, name, t.cases, 7, i)
            assert (a.seed, a.variant, a.changes, a.ops) == (b.seed, b.variant, b.changes, b.ops)
