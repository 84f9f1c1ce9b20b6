"""Process and CPU measurements for the load tests, through psutil.

CPU seconds, resident memory, context switches and children of a server process, and
the busy time of given CPUs: the figures the scripts report, read by psutil instead of
parsing /proc by hand.  A process that has gone reads as nothing (None, 0 or empty).
"""

from __future__ import annotations

import psutil


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def cpu_times(pid: int, descendants: bool = False) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` (all its threads), plus its live
    descendants' when ``descendants``; (0, 0) for a process that has gone."""
    proc = _process(pid)
    if proc is None:
        return 0.0, 0.0
    procs = [proc]
    if descendants:
        try:
            procs += proc.children(recursive=True)
        except psutil.Error:
            pass
    user = system = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        user += t.user
        system += t.system
    return user, system


def rss_bytes(pid: int, descendants: bool = False) -> int | None:
    """Resident memory of ``pid`` in bytes (plus its live descendants' when ``descendants``),
    or None once it has gone."""
    proc = _process(pid)
    if proc is None:
        return None
    try:
        procs = [proc, *proc.children(recursive=True)] if descendants else [proc]
        total = proc.memory_info().rss
    except psutil.Error:
        return None
    for p in procs[1:]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a child that ended meanwhile
            continue
    return total


def ctx_switches(pid: int, voluntary_only: bool = False) -> int:
    """Context switches of ``pid``'s live threads (voluntary ones only if asked); 0 once gone.
    psutil's num_ctx_switches counts the main thread only, so each thread is read as its own."""
    proc = _process(pid)
    try:
        tids = [t.id for t in proc.threads()] if proc else []
    except psutil.Error:
        tids = []
    total = 0
    for tid in tids:
        try:
            c = psutil.Process(tid).num_ctx_switches()
        except psutil.Error:  # the thread ended
            continue
        total += c.voluntary if voluntary_only else c.voluntary + c.involuntary
    return total


def children(pid: int) -> set[int]:
    """Pids of the direct children of ``pid`` (empty once it has gone)."""
    proc = _process(pid)
    try:
        return {c.pid for c in proc.children()} if proc else set()
    except psutil.Error:
        return set()


def cpus_busy(cpus: list[int]) -> float:
    """Seconds the given CPUs spent not idle (anyone's work, irq and softirq included)."""
    per_cpu = psutil.cpu_times(percpu=True)
    busy = 0.0
    for c in cpus:
        t = per_cpu[c]
        busy += t.user + t.nice + t.system + t.irq + t.softirq
    return busy


def cpu_user_steal(cpu: int) -> tuple[float, float]:
    """(user+nice+system, steal) seconds of one CPU so far."""
    t = psutil.cpu_times(percpu=True)[cpu]
    return t.user + t.nice + t.system, t.steal
