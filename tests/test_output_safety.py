"""Outputs never destroy data (issue 11, section 1).

``force`` replaces only what mlxquant wrote (a GGUF with ``mlxquant.*`` keys; a folder whose
``mlxquant.json`` lists every file in it), never a source, a folder holding one, or a user's
files; SIGINT / SIGTERM end with one line and no partial output; partial outputs of killed runs
are removed by the next run when their process is provably gone; OS errors name the output path
the user gave, not a temporary file. Each case goes through the Python API and, where the
command line has its own path, through ``mlxquant`` itself.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.errors import OutputExistsError, OutputWriteError, UnsafeOutputError
from mlxquant.formats.atomic import atomic_dir, atomic_file, check_output
from mlxquant.formats.gguf_write import Metadata, TensorSpec, write_gguf
from mlxquant.formats.hf import HFTensorSpec, write_hf_folder
from mlxquant.formats.ownership import PROVENANCE_FILE, remove_stale_partials
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path
from conftest import need

ROOT = Path(__file__).resolve().parents[1]


# ---- small outputs, written by mlxquant's own writers -----------------------------------------

def gguf(out: Path, mlxquant_keys: bool = True, force: bool = False) -> Path:
    """A 2-tensor GGUF; with ``mlxquant_keys`` it carries provenance like every conversion."""
    md = Metadata()
    md.set("general.architecture", "llama")
    if mlxquant_keys:
        md.set("mlxquant.version", "0.1.0")
    x = np.arange(64, dtype=np.float32)
    return write_gguf(out, md, [TensorSpec("a.weight", "F32", (64,)), TensorSpec("b.weight", "F32", (64,))],
                      iter([x, -x]), force=force)


def folder(out: Path, force: bool = False, value: float = 1.0) -> Path:
    """A 1-tensor HF folder (config.json, model.safetensors, tokenizer_config.json, mlxquant.json)."""
    return write_hf_folder(out, {"model_type": "llama"}, [HFTensorSpec("w", (4, 4))],
                           lambda s: np.full(s.shape, value, np.float32),
                           files={"tokenizer_config.json": {"x": 1}}, force=force)


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def no_partials(d: Path) -> bool:
    return not [p for p in d.iterdir() if p.name.endswith((".partial", ".old"))]


# ---- --force refuses what mlxquant did not write ------------------------------------------------

def test_user_folder_is_not_replaced(tmp_path):
    """``-o userdir --to mlx --force`` deleted a user's notes.txt; ``-o userdir2 --outtype Q8_0
    --force`` replaced a whole folder by a file."""
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeOutputError, match=r"userdir: is a folder mlxquant did not write"):
        check_output(user, True)
    with pytest.raises(UnsafeOutputError, match="userdir"):
        folder(user, force=True)
    with pytest.raises(UnsafeOutputError, match="userdir"):
        gguf(user, force=True)                             # a folder is not replaced by a file
    assert listing(user) == ["notes.txt"] and (user / "notes.txt").read_text() == "mine"
    assert listing(tmp_path) == ["userdir"]


def test_mlxquant_folder_with_a_user_file_is_not_replaced(tmp_path):
    out = folder(tmp_path / "m")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeOutputError, match=r"m: holds 'notes.txt', which mlxquant did not write"):
        folder(out, force=True, value=2.0)
    (out / "notes.txt").unlink()
    (out / "sub").mkdir()
    with pytest.raises(UnsafeOutputError, match=r"holds the folder 'sub'"):
        folder(out, force=True, value=2.0)
    (out / "sub").rmdir()
    (out / "link.json").symlink_to(out / "config.json")
    with pytest.raises(UnsafeOutputError, match=r"holds the link 'link.json'"):
        folder(out, force=True, value=2.0)
    assert (out / "config.json").is_file() and no_partials(tmp_path)


def test_folder_without_valid_provenance_is_not_replaced(tmp_path):
    out = folder(tmp_path / "m")
    (out / PROVENANCE_FILE).write_text("[1, 2]")           # not an object: not ours
    with pytest.raises(UnsafeOutputError, match=r"no valid mlxquant.json"):
        check_output(out, True)
    (out / PROVENANCE_FILE).unlink()
    with pytest.raises(UnsafeOutputError, match=r"no valid mlxquant.json"):
        check_output(out, True)


def test_foreign_files_are_refused(tmp_path):
    """A GGUF without mlxquant.* keys (llama.cpp's, a download) and any other file."""
    theirs = gguf(tmp_path / "theirs.gguf", mlxquant_keys=False)
    before = theirs.read_bytes()
    with pytest.raises(UnsafeOutputError, match=r"theirs.gguf: is not a GGUF file mlxquant wrote"):
        gguf(theirs, force=True)
    with pytest.raises(UnsafeOutputError, match=r"theirs.gguf: is not a GGUF file mlxquant wrote"):
        folder(theirs, force=True)                         # nor a file by a folder
    assert theirs.read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(UnsafeOutputError, match="notes.txt"):
        gguf(notes, force=True)
    assert notes.read_text() == "mine" and no_partials(tmp_path)


def test_without_force_an_existing_output_is_kept(tmp_path):
    out = gguf(tmp_path / "x.gguf")
    with pytest.raises(OutputExistsError, match="already exists") as e:
        gguf(out)
    assert not isinstance(e.value, UnsafeOutputError)


# ---- sources ------------------------------------------------------------------------------------

def test_sources_are_never_replaced(tmp_path):
    """``convert nest/m.gguf -o nest --to mlx --force`` deleted the source model."""
    nest = tmp_path / "nest"
    nest.mkdir()
    src = gguf(nest / "m.gguf")                            # an mlxquant GGUF: replaceable, but a source
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    deep_src = gguf(deep / "m.gguf")
    link = tmp_path / "link.gguf"
    link.symlink_to(src)
    hard = tmp_path / "hard.gguf"
    os.link(src, hard)
    cases = [(src, src, "is the conversion's source"),
             (nest, src, "contains the conversion's source"),
             (tmp_path / "a", deep_src, "contains the conversion's source"),
             (link, src, "is the conversion's source"),
             (hard, src, "is the conversion's source"),
             (src, tmp_path / "a" / ".." / "nest" / "m.gguf", "is the conversion's source")]
    for out, source, why in cases:
        for force in (False, True):
            with pytest.raises(UnsafeOutputError, match=why) as e:
                check_output(out, force, sources=[source])
            assert str(e.value).startswith(f"{out}: ") and "\n" not in str(e.value)
    # the imatrix is a source too; None entries (no imatrix) are skipped
    with pytest.raises(UnsafeOutputError, match="is the conversion's source"):
        check_output(src, True, sources=[None, deep_src, src])
    # the writers apply the same rule at rename time
    with pytest.raises(UnsafeOutputError):
        with atomic_file(src, force=True, sources=[src]) as tmp:
            tmp.write_bytes(b"x")
    assert check_output(src, True, sources=[deep_src]) == src  # not this conversion's source
    assert no_partials(nest) and src.stat().st_size > 64


def test_dot_is_not_an_output_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in (".", "..", "./"):
        with pytest.raises(UnsafeOutputError, match="name the output itself"):
            check_output(name, True)


def test_a_link_at_the_output_is_not_replaced(tmp_path):
    target = gguf(tmp_path / "t.gguf")
    link = tmp_path / "l.gguf"
    link.symlink_to(target)
    with pytest.raises(UnsafeOutputError, match=r"l.gguf: is a symbolic link"):
        check_output(link, True)


# ---- earlier mlxquant outputs are replaced --------------------------------------------------------

def test_earlier_outputs_are_replaced(tmp_path):
    out = gguf(tmp_path / "x.gguf")
    gguf(out, force=True)
    m = folder(tmp_path / "m")
    assert json.loads((m / PROVENANCE_FILE).read_text())["output"]["files"] == [
        "config.json", "mlxquant.json", "model.safetensors", "tokenizer_config.json"]
    folder(m, force=True, value=2.0)
    assert (m / "model.safetensors").read_bytes()[-4:] == np.float32(2.0).tobytes()
    # a kind change: an mlxquant folder becomes a GGUF file and back
    gguf(m, force=True)
    assert m.is_file()
    folder(m, force=True)
    assert m.is_dir() and (tmp_path / "x.gguf").is_file()
    # an empty folder holds nothing to lose
    (tmp_path / "empty").mkdir()
    folder(tmp_path / "empty", force=True)
    assert listing(tmp_path) == ["empty", "m", "x.gguf"]


def test_folders_from_before_the_file_list_use_the_writer_patterns(tmp_path):
    m = folder(tmp_path / "m")
    record = json.loads((m / PROVENANCE_FILE).read_text())
    del record["output"]
    (m / PROVENANCE_FILE).write_text(json.dumps(record))
    (m / "chat_template.jinja").write_text("{{ x }}")
    (m / "model-00001-of-00002.safetensors").write_bytes(b"")
    assert check_output(m, True) == m
    (m / "README.md").write_text("mine")
    with pytest.raises(UnsafeOutputError, match="README.md"):
        check_output(m, True)


# ---- stale partial outputs --------------------------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale_file = tmp_path / f".x.gguf.{dead}.abcd_123.partial"
        stale_file.write_bytes(b"half")
        stale_dir = tmp_path / f".m.{dead}.zz9zz9zz.partial"
        (stale_dir / "sub").mkdir(parents=True)
        (stale_dir / "sub" / "model.safetensors").write_bytes(b"half")
        stale_old = tmp_path / f".m.{dead}.qqqqqqqq.old"
        stale_old.mkdir()
        kept = [tmp_path / f".x.gguf.{live.pid}.abcdefgh.partial",   # still running
                tmp_path / f".x.gguf.{os.getpid()}.abcdefgh.partial",  # this process
                tmp_path / ".x.gguf.oavfok8j.partial",               # no PID: cannot prove
                tmp_path / f".x.gguf.{dead}.abc.partial",            # not tempfile's 8 chars
                tmp_path / f"x.gguf.{dead}.abcdefgh.partial",         # not hidden
                tmp_path / "notes.txt"]
        for p in kept:
            p.write_text("keep")
        link = tmp_path / f".l.{dead}.abcdefgh.partial"
        link.symlink_to(tmp_path / "notes.txt")                    # never a link
        assert check_output(tmp_path / "new.gguf", False) == tmp_path / "new.gguf"
        assert not stale_file.exists() and not stale_dir.exists() and not stale_old.exists()
        assert all(p.read_text() == "keep" for p in kept) and link.is_symlink()
        assert remove_stale_partials(tmp_path) == []
    finally:
        live.kill()
        live.wait()


def test_temporary_names_carry_the_pid(tmp_path):
    with atomic_file(tmp_path / "x.gguf") as tmp:
        assert tmp.name.startswith(f".x.gguf.{os.getpid()}.") and tmp.name.endswith(".partial")
        tmp.write_bytes(b"x")
    with atomic_dir(tmp_path / "m") as tmp:
        assert tmp.name.startswith(f".m.{os.getpid()}.")
    assert listing(tmp_path) == ["m", "x.gguf"]


# ---- OS errors name the output ----------------------------------------------------------------------

def test_os_errors_name_the_output_not_the_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "x.gguf"
    with pytest.raises(OutputWriteError) as e:
        with atomic_file(out) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert str(e.value) == f"{out}: No space left on device"
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(out) and isinstance(e.value, OSError)
    assert listing(tmp_path) == []
    # a nameless write error (f.write on a full disk) is the output's too
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OutputWriteError, match=r"/m: No space left on device$"):
        folder(tmp_path / "m")
    monkeypatch.undo()
    assert listing(tmp_path) == []
    # an error about another file (a source) is left as it is
    with pytest.raises(FileNotFoundError) as e2:
        with atomic_file(out):
            open(tmp_path / "missing-source.gguf", "rb")
    assert e2.value.filename == str(tmp_path / "missing-source.gguf") and listing(tmp_path) == []


def test_read_only_folder_names_the_output(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        name = os.path.join(kwargs["dir"], kwargs["prefix"] + "oavfok8j" + kwargs["suffix"])
        raise OSError(errno.EROFS, "Read-only file system", name)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "x.gguf"
    with pytest.raises(OutputWriteError) as e:
        gguf(out)
    assert str(e.value) == f"{out}: Read-only file system" and ".partial" not in str(e.value)


def test_read_only_folder_for_real(tmp_path):
    """A folder the user cannot write: the error names the output, not a temporary file. Root
    writes anywhere, so as root the write runs in a child process without the capabilities that
    bypass file permissions (util-linux's ``setpriv``)."""
    import shutil

    drop = []
    if os.geteuid() == 0:
        need(shutil.which("setpriv") is not None, "setpriv (util-linux), to drop root's file access")
        caps = "-dac_override,-dac_read_search"
        drop = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from mlxquant.errors import OutputWriteError
        from test_output_safety import gguf
        try:
            gguf(Path({str(ro / "x.gguf")!r}))
        except OutputWriteError as e:
            print(e)
        else:
            print("written")
        """)
    try:
        r = subprocess.run(drop + [sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
        assert r.stdout.strip() == f"{ro / 'x.gguf'}: Permission denied", r.stderr
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


# ---- the command line -------------------------------------------------------------------------------

def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stderr


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> Path:
    """The tiny-shakespeare model as a Q8_0 GGUF made by ``mlxquant convert``."""
    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    out = tmp_path_factory.mktemp("cli") / "small.gguf"
    code, err = cli("convert", str(d), "-o", str(out), "--outtype", "Q8_0")
    assert code == 0 and out.is_file(), err
    return out


def one_error_line(err: str) -> str:
    """The only line of ``err`` (the progress bar's label, printed when stderr is no terminal,
    aside)."""
    lines = [ln for ln in err.splitlines() if ln.strip() and ln.strip() != "converting"]
    assert len(lines) == 1 and lines[0].startswith("mlxquant: error: "), err
    return lines[0]


def test_cli_force_refusals(small_gguf, tmp_path):
    """The three commands of the issue, through ``mlxquant convert``."""
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    code, err = cli("convert", str(small_gguf), "-o", str(user), "--to", "mlx", "--force")
    assert code == 1 and str(user) in one_error_line(err) and "did not write" in err
    user2 = tmp_path / "userdir2"
    user2.mkdir()
    (user2 / "notes.txt").write_text("mine")
    code, err = cli("convert", str(small_gguf), "-o", str(user2), "--outtype", "Q8_0", "--force")
    assert code == 1 and str(user2) in one_error_line(err)
    nest = tmp_path / "nest"
    nest.mkdir()
    src = nest / "m.gguf"
    src.write_bytes(small_gguf.read_bytes())
    code, err = cli("convert", str(src), "-o", str(nest), "--to", "mlx", "--force")
    assert code == 1 and str(nest) in one_error_line(err)
    code, err = cli("convert", str(src), "-o", str(src), "--outtype", "Q8_0", "--force")
    assert code == 1 and str(src) in one_error_line(err)
    assert src.read_bytes() == small_gguf.read_bytes()
    assert listing(user) == listing(user2) == ["notes.txt"] and listing(nest) == ["m.gguf"]
    assert no_partials(tmp_path)


def test_convert_api_refuses_the_same(small_gguf, tmp_path):
    from mlxquant import convert

    nest = tmp_path / "nest"
    nest.mkdir()
    src = nest / "m.gguf"
    src.write_bytes(small_gguf.read_bytes())
    im = tmp_path / "imatrix.gguf"
    im.write_bytes(b"not read")
    for out, kw in ((nest, {"to": "mlx"}), (src, {"outtype": "Q8_0"}), (tmp_path, {"to": "hf"}),
                    (im, {"outtype": "Q8_0", "imatrix": im})):
        with pytest.raises(UnsafeOutputError, match="source"):
            convert(src, out, force=True, **kw)
    assert listing(nest) == ["m.gguf"] and src.read_bytes() == small_gguf.read_bytes()
    assert im.read_bytes() == b"not read" and no_partials(tmp_path)


def test_cli_os_errors_name_the_output(small_gguf, tmp_path, monkeypatch):
    """``[Errno 30] ... .x.gguf.oavfok8j.partial`` was printed: the line names ``-o``'s path."""
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system",
                      os.path.join(kwargs["dir"], kwargs["prefix"] + "oavfok8j" + kwargs["suffix"]))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    for args in (["--outtype", "Q8_0"], ["--to", "mlx"]):
        out = tmp_path / "x.out"
        code, err = cli("convert", str(small_gguf), "-o", str(out), *args)
        assert code == 1 and one_error_line(err) == f"mlxquant: error: {out}: Read-only file system"
    assert listing(tmp_path) == []


def test_cli_replaces_its_own_outputs(small_gguf, tmp_path):
    out = tmp_path / "again.gguf"
    for _ in range(2):
        code, err = cli("convert", str(small_gguf), "-o", str(out), "--outtype", "Q8_0", "--force")
        assert code == 0, err
    mlx = tmp_path / "mlx"
    for _ in range(2):
        code, err = cli("convert", str(small_gguf), "-o", str(mlx), "--to", "mlx", "--force")
        assert code == 0, err
    assert json.loads((mlx / PROVENANCE_FILE).read_text())["output"]["files"] == listing(mlx)
    assert listing(tmp_path) == ["again.gguf", "mlx"]


# ---- signals ------------------------------------------------------------------------------------------

def handlers_installed(pid: int) -> bool:
    """True once the process catches SIGTERM (Python alone does not: mlxquant.entry does)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlxquant", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 0.5])
def test_sigint_during_start_up_prints_one_line(tmp_path, delay):
    """From the moment mlxquant's entry point runs (signal handlers in place), Ctrl-C at any
    time -- while click, NumPy, Numba load, or while converting -- ends with one line."""
    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    out = tmp_path / "x.gguf"
    p = start(["convert", str(d), "-o", str(out), "--outtype", "Q8_0"])
    deadline = time.monotonic() + 30
    while not handlers_installed(p.pid) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert "Traceback" not in err, err
    if p.returncode != 0:  # it may have finished first
        assert p.returncode == 130 and one_error_line(err) == "mlxquant: error: interrupted", err
        assert not out.exists()
    assert no_partials(tmp_path)


def test_sigterm_mid_conversion_leaves_nothing(tmp_path):
    src = smollm2_gguf_path()
    need(src is not None, "SmolLM2 GGUF")
    out = tmp_path / "s.gguf"
    p = start(["convert", str(src), "-o", str(out), "--outtype", "Q8_0"])
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline:
        if any(q.name.endswith(".partial") and q.stat().st_size > 1 << 20 for q in tmp_path.iterdir()):
            break
        time.sleep(0.01)
    assert p.poll() is None, "the conversion ended before it could be terminated"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "Traceback" not in err, err
    # (a log warning about re-quantizing Q4_1 may come first)
    assert err.splitlines()[-1] == "mlxquant: error: terminated" and err.count("error:") == 1, err
    assert listing(tmp_path) == []


def test_a_killed_runs_partial_is_removed_by_the_next_run(small_gguf, tmp_path):
    stale = tmp_path / f".x.gguf.{dead_pid()}.k1ll3d00.partial"
    stale.write_bytes(b"GGUF half written")
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine")
    code, err = cli("convert", str(small_gguf), "-o", str(tmp_path / "x.gguf"), "--outtype", "Q8_0")
    assert code == 0, err
    assert listing(tmp_path) == ["notes.txt", "x.gguf"]


def test_run_returns_the_status_and_prints_one_line(tmp_path, capsys):
    """The console script's ``run`` (in this process: handlers restored afterwards)."""
    from mlxquant import entry, signals

    saved = {s: signal.getsignal(s) for s in signals.OUTCOMES}
    try:
        assert entry.run(["--version"]) == 0
        assert entry.run(["inspect", str(tmp_path / "nope.gguf")]) == 1
        assert one_error_line(capsys.readouterr().err).endswith("nope.gguf: no such file or folder")
        assert entry.run(["convert"]) == 2  # a usage error, shown by click
        assert signal.getsignal(signal.SIGTERM) is signals._handler
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        signals._State.reported = False
