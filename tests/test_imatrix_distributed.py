"""mlxquant imatrix over an ``mx.distributed`` group: two processes on loopback (MLX's ring backend,
started by :func:`mlxquant.calib.launch.launch_local`, as ``mlx.launch`` starts them), each running
every other chunk, sums and counts reduced with ``all_sum``. The file rank 0 writes equals a
single-process run over the same chunks within 1e-6 relative on every entry, counts and chunk
count equal, running perplexities within 1e-5; rank 1 writes nothing; with both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlxquant.calib import imatrix
from mlxquant.calib.launch import launch_local
from mlxquant.formats.imatrix import read_imatrix_data


pytest.importorskip("mlx.core")


@pytest.mark.parametrize("backend,chunks", [("numpy", 5), ("mlx", 3)])
def test_two_processes_equal_one(shakespeare, calib_file, tmp_path, monkeypatch, backend, chunks):
    # OpenBLAS's results depend on its thread count (~2e-6 relative in these sums, measured):
    # one BLAS thread in every process, the single one included
    monkeypatch.setenv("MLXQUANT_BLAS_THREADS", "1")
    out = tmp_path / "im.gguf"
    cmd = [sys.executable, "-m", "mlxquant", "imatrix", str(shakespeare), "--text", str(calib_file),
           "-o", str(out), "--ctx", "64", "--chunks", str(chunks), "--backend", backend,
           "--distributed", "--json"]
    ranks = launch_local(cmd, n=2, timeout=150, env={"MLXQUANT_BLAS_THREADS": "1"}, cwd=tmp_path)
    for r in ranks:
        assert r.returncode == 0, (r.rank, r.stderr[-2000:])
    rep = json.loads(ranks[0].stdout)
    assert rep["processes"] == 2 and rep["rank"] == 0 and rep["chunks"] == chunks
    assert ranks[1].stdout.strip() == ""  # one summary per group
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im.gguf"]  # rank 1 wrote nothing

    single = imatrix(shakespeare, calib_file, ctx=64, chunks=chunks, backend=backend, distributed=False)
    # perplexities are printed to 4 decimals: a last-bit difference between the processes (ranks
    # load MLX for the group) can move one across a rounding boundary (71.4697 vs 71.4698 seen)
    assert rep["ppl_per_chunk"] == pytest.approx(single.ppl_per_chunk, rel=1e-5, abs=1e-4)
    got = read_imatrix_data(out)
    assert got.chunk_count == chunks and got.chunk_size == 64 and got.datasets == (str(calib_file),)
    assert sorted(got.entries) == sorted(single.stats.tensors)
    for name, t in single.stats.tensors.items():
        e = got.entries[name]
        assert int(e.counts[0]) == t.count == chunks * 64
        ref = t.in_sum2.astype(np.float64)
        rel = np.abs(e.in_sum2[0].astype(np.float64) - ref) / ref
        assert rel.max() <= 1e-6, (name, rel.max())


def test_launcher_reports_a_failing_rank(tmp_path):
    # a rank that fails ends the group at once (the other would wait in all_sum forever)
    code = ("import os, sys, time, mlx.core as mx\n"
            "g = mx.distributed.init(strict=True, backend='ring')\n"
            "sys.exit(3) if g.rank() == 1 else time.sleep(60)\n")
    ranks = launch_local([sys.executable, "-c", code], n=2, timeout=30)
    assert ranks[1].returncode == 3 and ranks[0].returncode is None


def test_distributed_outside_a_group_is_one_line(shakespeare, calib_file, tmp_path):
    out = tmp_path / "im.gguf"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    r = subprocess.run([sys.executable, "-m", "mlxquant", "imatrix", str(shakespeare), "--text",
                        str(calib_file), "-o", str(out), "--ctx", "64", "--distributed"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "mx.distributed" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not out.exists()
