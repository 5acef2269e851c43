"""One run per folder, the lock that keeps a second process out, and the checks made before any work."""

import subprocess
import sys

import pytest

from moleclip.training.outputs import FolderInUseError, check_run_folder, check_writable, hold_run_folder


def test_a_lock_held_by_a_live_pid_says_which_file_to_delete_when_no_run_is_writing(tmp_path):
    # A killed run's pid can belong to another program by now: waiting for it would never end.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".moleclip.lock").write_text(str(other.pid))
        with pytest.raises(FolderInUseError, match=rf"delete {tmp_path / '.moleclip.lock'} and run again"):
            with hold_run_folder(tmp_path):
                pass
    finally:
        other.kill()
        other.wait()


def test_a_file_where_the_output_folder_belongs_is_named_as_such(tmp_path):
    (tmp_path / "results.csv").write_text("x\n1\n")
    with pytest.raises(NotADirectoryError, match=r"results.csv is a file, not a folder"):
        check_run_folder(tmp_path / "results.csv", ("results.json",))
    with pytest.raises(NotADirectoryError, match=r"results.csv is a file, not a folder"):
        check_writable(tmp_path / "results.csv" / "sub" / "out.csv")


def test_overwrite_refuses_to_remove_what_the_run_reads(tmp_path):
    (tmp_path / "molecules.csv").write_text("smiles\nCCO\n")  # the user's input, named as explain names its output
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "lib.parquet").write_text("x")
    outputs = ("atoms.csv", "molecules.csv", "pictures")
    with pytest.raises(ValueError, match=r"--input .*molecules.csv is one of the earlier outputs .* copy it out"):
        check_run_folder(tmp_path, outputs, overwrite=True, inputs={"--input": tmp_path / "molecules.csv"})
    with pytest.raises(ValueError, match=r"--library .*lib.parquet is one of the earlier outputs"):
        check_run_folder(tmp_path, outputs, overwrite=True, inputs={"--library": tmp_path / "pictures" / "lib.parquet"})
    # an input elsewhere, or beside the outputs but not among them, is no reason to refuse
    (tmp_path / "mine.csv").write_text("smiles\nCCO\n")
    check_run_folder(tmp_path, outputs, overwrite=True, inputs={"--input": tmp_path / "mine.csv", "--other": None})
    with hold_run_folder(tmp_path, clear=outputs):
        pass
    assert (tmp_path / "mine.csv").is_file() and not (tmp_path / "molecules.csv").exists()


def test_a_dead_processs_lock_taken_over_by_another_process_meanwhile_is_not_taken_again(tmp_path, monkeypatch):
    """Two runs find the same dead run's lock; the other one takes it over first. This one must then see the other's
    live lock and be refused, not delete it and take the folder too (both would write, both report success)."""
    from moleclip.training import outputs

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    lock = tmp_path / ".moleclip.lock"
    lock.write_text("999999999")  # a run that died
    real_alive = outputs._alive

    def alive(pid):
        if pid == 999999999:  # just as this process finds the dead pid, the other run takes the lock over
            lock.write_text(str(other.pid))
            return False
        return real_alive(pid)

    monkeypatch.setattr(outputs, "_alive", alive)
    try:
        with pytest.raises(FolderInUseError, match=f"pid {other.pid}"):
            with hold_run_folder(tmp_path):
                pass
        assert lock.read_text() == str(other.pid)  # the other run's lock is untouched
    finally:
        other.kill()
        other.wait()


def test_a_lock_another_process_took_over_is_not_deleted_when_this_run_ends(tmp_path):
    lock = tmp_path / ".moleclip.lock"
    with hold_run_folder(tmp_path):
        lock.write_text("12345")  # taken over by another process (one that believed this one dead)
    assert lock.read_text() == "12345"


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_of_that_file(tmp_path):
    from moleclip.training.outputs import write_text_atomically

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = tmp_path / ".results.json.tmp-999999999.json"  # a run killed while writing results.json
        dead.write_text('{"half": ')
        live = tmp_path / f".results.json.tmp-{other.pid}.json"  # a process still writing it
        live.write_text("{")
        unrelated = tmp_path / ".results.json.tmp-notes.json"
        unrelated.write_text("mine")
        write_text_atomically(tmp_path / "results.json", "{}")
        assert not dead.exists() and live.exists() and unrelated.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["results.json", live.name, unrelated.name])
    finally:
        other.kill()
        other.wait()


def test_an_atomic_write_reaches_the_disk_before_its_rename(tmp_path, monkeypatch):
    import os

    from moleclip.training import outputs

    events = []
    monkeypatch.setattr(outputs.os, "fsync", lambda fd: events.append("fsync"))
    real_replace = os.replace
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: events.append("rename") or real_replace(a, b))
    outputs.write_text_atomically(tmp_path / "results.json", "{}")
    assert events == ["fsync", "rename"] and (tmp_path / "results.json").read_text() == "{}"
