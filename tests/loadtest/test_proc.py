"""Process measurements through psutil (``loadtest/_proc.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import _proc


def test_children_and_cpu_of_descendants_include_a_live_child():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert child.pid in _proc.children(os.getpid())
        mine = sum(_proc.cpu_times(os.getpid()))
        assert sum(_proc.cpu_times(os.getpid(), descendants=True)) >= mine
    finally:
        child.stdin.close()
        child.wait()
    assert child.pid not in _proc.children(os.getpid())


def test_a_gone_process_reads_as_nothing():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert _proc.rss_bytes(child.pid) is None
    assert _proc.cpu_times(child.pid) == (0.0, 0.0)
    assert _proc.ctx_switches(child.pid) == 0


def test_context_switches_count_every_thread_not_only_the_main_one():
    """psutil's num_ctx_switches reads the main thread only; a thread that sleeps many
    times must show in the total."""
    before = _proc.ctx_switches(os.getpid(), voluntary_only=True)
    go, done, leave = threading.Event(), threading.Event(), threading.Event()

    def sleeper() -> None:
        for _ in range(200):
            go.wait(0.0005)  # a timed wait: one voluntary switch each
        done.set()
        leave.wait(30)  # stay alive: the count covers live threads

    t = threading.Thread(target=sleeper)
    t.start()
    done.wait(30)
    during = _proc.ctx_switches(os.getpid(), voluntary_only=True)
    leave.set()
    t.join()
    assert during - before >= 100


def test_rss_and_busy_cpu_are_positive():
    assert _proc.rss_bytes(os.getpid()) > 1_000_000
    assert _proc.cpus_busy([0]) > 0
    busy, steal = _proc.cpu_user_steal(0)
    assert busy > 0 and steal >= 0
