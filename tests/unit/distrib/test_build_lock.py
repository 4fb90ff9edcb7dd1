"""A JIT-build lock left by a killed build is cleared before DeepSpeed starts; one a live
build holds is left alone. Every lock here is a fake in a temporary TORCH_EXTENSIONS_DIR,
never the real cache's."""
import os
import subprocess
import sys
import threading
import time

from torch.utils.file_baton import FileBaton

from distrib.build_lock import clear_stale_build_locks, holders, on_network_filesystem


def fake_lock(root, *parts):
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True)
    (folder / "build.ninja").write_text("")
    lock = folder / "lock"
    lock.touch()
    return lock


def test_an_unheld_lock_is_removed_with_a_warning_naming_it(tmp_path, capsys):
    lock = fake_lock(tmp_path, "deepspeed_shm_comm")
    assert clear_stale_build_locks(tmp_path) == [lock]
    assert not lock.exists()
    assert f"removed the stale build lock {lock}" in capsys.readouterr().err
    baton = FileBaton(str(lock))  # torch's next build takes the lock instead of waiting forever
    assert baton.try_acquire()
    baton.release()


def test_the_default_cache_layout_and_torch_extensions_dir_are_both_searched(tmp_path, monkeypatch):
    nested = fake_lock(tmp_path, "py311_cpu", "deepspeed_shm_comm")  # ~/.cache/torch_extensions layout
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert clear_stale_build_locks() == [nested]


def test_a_lock_a_running_build_holds_is_left_alone(tmp_path):
    lock = fake_lock(tmp_path, "deepspeed_shm_comm")
    # Another process holds it open, as torch's FileBaton does for the whole build.
    hold = "import os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); print('holding', flush=True); time.sleep(60)"
    builder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert builder.stdout.readline().strip() == "holding"
        assert holders(lock) == [builder.pid]
        started = time.monotonic()
        assert clear_stale_build_locks(tmp_path) == []
        assert lock.exists() and time.monotonic() - started < 5  # no waiting: torch waits for the build
    finally:
        builder.kill()
        builder.wait()


def test_on_a_shared_cache_an_unheld_lock_waits_for_an_idle_build_directory(tmp_path, capsys):
    created = time.time()
    lock = fake_lock(tmp_path, "deepspeed_shm_comm")
    assert clear_stale_build_locks(tmp_path, stale_after_s=1.5, poll_s=0.1) == [lock]
    assert 1.4 <= time.time() - created < 10  # removed once the directory was idle for 1.5 s
    err = capsys.readouterr().err
    assert f"for the build lock {lock}" in err and f"`rm {lock}` ends the wait" in err and "removed" in err


def test_a_lock_released_during_the_wait_is_not_reported(tmp_path):
    lock = fake_lock(tmp_path, "deepspeed_shm_comm")
    # A build on another machine finishes: its lock disappears.
    threading.Timer(0.3, lock.unlink).start()
    started = time.monotonic()
    assert clear_stale_build_locks(tmp_path, stale_after_s=30, poll_s=0.05) == []
    assert time.monotonic() - started < 5


def test_an_old_build_directory_is_stale_at_once_even_on_a_shared_cache(tmp_path):
    lock = fake_lock(tmp_path, "deepspeed_shm_comm")
    old = time.time() - 3600
    for path in (lock, lock.parent / "build.ninja", lock.parent):
        os.utime(path, (old, old))
    started = time.monotonic()
    assert clear_stale_build_locks(tmp_path, stale_after_s=300) == [lock]
    assert time.monotonic() - started < 5


def test_no_lock_no_work(tmp_path):
    assert clear_stale_build_locks(tmp_path / "missing") == []
    assert clear_stale_build_locks(tmp_path) == []


def test_a_local_disk_is_not_a_network_filesystem(tmp_path):
    assert not on_network_filesystem(tmp_path)


def test_workers_clear_the_lock_before_importing_deepspeed(tmp_path, monkeypatch):
    from trainers.loop import import_deepspeed

    lock = fake_lock(tmp_path, "deepspeed_shm_comm")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # what import_deepspeed would set, kept to this test
    import_deepspeed(use_gpu=False)
    assert not lock.exists()
