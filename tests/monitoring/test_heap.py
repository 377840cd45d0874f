"""The host heap probe (glibc ``mallinfo2``) and the CPU policy it feeds, on real allocations.

Every case runs in a fresh process that allocates through the real C allocator (``malloc`` via
ctypes), so that its heap holds only what the case put there: the probe's figures and the
policy's verdicts are checked against what a real ``malloc_trim`` then gives back. Nothing here
depends on the machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitoring import heap
from monitoring.host import HostProbe
from monitoring.probes import Probes

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
LINUX_GLIBC = heap.available()
needs_glibc = pytest.mark.skipif(not LINUX_GLIBC, reason="needs glibc 2.33+ (mallinfo2)")

#: A process that allocates, frees and trims, and says what the probe read at each step.
#: Blocks of 64 KiB (below glibc's mmap threshold, so they come from the arena) are separated
#: by live 8 KiB "pins" (too big for the small free lists an interpreter leaves, so they come
#: from the top, between the blocks), so that freeing the blocks leaves free chunks glibc cannot
#: merge into the top and keeps (the way a synthesis's activations are kept between long-lived
#: objects): only a trim returns their pages.
COMMON = r"""
import ctypes, json, sys
from monitoring import heap, release
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
BLOCK = 64 * 1024
pins = []

def allocate(mib, pinned=True):
    blocks = []
    for _ in range(mib * 16):
        block = libc.malloc(BLOCK)
        ctypes.memset(block, 1, BLOCK)  # touched: resident
        blocks.append(block)
        if pinned:
            pins.append(libc.malloc(8 * 1024))
    return blocks

def free(blocks):
    for block in blocks:
        libc.free(block)

def rss():
    return release.rss_bytes()

def figures():
    read = heap.read()
    return None if read is None else read.__dict__
"""

PROBE = COMMON + r"""
out = {"before_trim": figures()}
release.malloc_trim()
out["after_first_trim"] = figures()
blocks = allocate(96)
out["allocated"] = figures()
free(blocks)
out["freed"] = figures()
before = rss()
release.malloc_trim()
out["trim_returned"] = before - rss()
out["after_trim"] = figures()
print(json.dumps(out))
"""


def run(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_glibc
def test_probe_tells_live_blocks_from_free_memory_glibc_keeps() -> None:
    got = run(PROBE)
    # no trim yet: what is resident and free cannot be told, so it is not guessed
    assert got["before_trim"]["releasable_bytes"] is None
    assert got["after_first_trim"]["releasable_bytes"] < 4 * MiB
    grown = got["allocated"]["in_use_bytes"] - got["after_first_trim"]["in_use_bytes"]
    assert 108 * MiB <= grown < 112 * MiB  # the blocks and their pins, nothing else
    freed = got["freed"]
    pinned = freed["in_use_bytes"] - got["after_first_trim"]["in_use_bytes"]
    assert 12 * MiB <= pinned < 14 * MiB  # the pins stay live
    assert freed["free_bytes"] >= 96 * MiB
    # what the probe said a light cleanup returns is what the trim returned
    returned = got["trim_returned"]
    assert returned > 84 * MiB
    assert abs(freed["releasable_bytes"] - returned) < 6 * MiB, (freed, returned)
    # after the trim the free blocks stay on glibc's lists (free_bytes) but hold no pages:
    # the raw mallinfo2 figure would overstate the next trim by all of it
    after = got["after_trim"]
    assert after["free_bytes"] >= 96 * MiB
    assert after["releasable_bytes"] < 4 * MiB


def test_figures_are_unknown_where_there_is_no_glibc() -> None:
    """Off Linux (here simulated by the platform name the probe checks) every heap figure is
    None: unknown, never a wrong number; the rest of the snapshot is unaffected."""
    got = run(
        "import json, sys\n"
        "from monitoring import heap\nfrom monitoring.probes import Probes\n"
        "sys.platform = 'darwin'  # before the first heap read, which looks glibc up once\n"
        "snap = Probes().snapshot()\n"
        "print(json.dumps([heap.available(), heap.read(), snap.host_heap_in_use_bytes,"
        " snap.host_heap_free_bytes, snap.host_heap_releasable_bytes,"
        " snap.host_rss_bytes is not None]))")
    assert got == [False, None, None, None, None, True]


def test_a_watched_process_and_the_sampler_read_no_heap() -> None:
    """Another process's heap cannot be read from here: None, not this process's figures."""
    assert HostProbe(pid=os.getppid()).heap() is None
    snap = Probes(pid=os.getppid()).snapshot()
    assert snap.host_heap_in_use_bytes is None and snap.host_rss_bytes
    own = Probes().snapshot(heap=False)
    assert own.host_heap_in_use_bytes is None


@needs_glibc
def test_this_process_snapshot_has_the_heap() -> None:
    snap = Probes().snapshot()
    assert snap.host_heap_in_use_bytes is not None and snap.host_heap_in_use_bytes > MiB
    assert snap.host_heap_free_bytes is not None and snap.host_heap_free_bytes >= 0


#: The same request shape eight times after a "load", each tracked as a synthesis event as a
#: session does; then the policy's verdict, and what a trim really returns.
POLICY = COMMON + r"""
from monitoring import Tracker
from monitoring.policy import PendingRequest, history_from_records, recommend
case = sys.argv[1]
release.malloc_trim()  # as a session's first synthesis does
tracker = Tracker()
records = []
with tracker.track("load", engine="work", device="cpu", weights_bytes=8 << 20) as h:
    weights = allocate(8, pinned=False)
records.append(h.record)
kept = []
for i in range(8):
    with tracker.track("synthesis", engine="work", device="cpu", size=100, seed=i) as h:
        if case == "retain":  # activations freed at the end: glibc keeps them (the first
            free(allocate(96, pinned=i == 0))  # synthesis leaves long-lived objects between)
        else:
            kept.extend(allocate(16, pinned=False))  # references kept: live blocks pile up
    records.append(h.record)
pending = PendingRequest(engine="work", size=100, device="cpu")
rec = recommend(tracker.probes.snapshot(), history_from_records(records), pending)
before = rss()
release.malloc_trim()
print(json.dumps({"action": rec.action, "urgency": rec.urgency,
                  "reasons": [[r.rule, r.action, r.urgency, r.text] for r in rec.reasons],
                  "light_frees": rec.light_frees_bytes, "trim_returned": before - rss()}))
"""


@needs_glibc
def test_memory_glibc_keeps_is_advised_to_a_light_cleanup_with_its_figure() -> None:
    got = run(POLICY.replace("sys.argv[1]", "'retain'"))
    reasons = {rule: (action, urgency, text) for rule, action, urgency, text in got["reasons"]}
    assert "leak.heap" not in reasons and "leak" not in reasons, reasons
    action, urgency, text = reasons["cache.reclaimable"]
    assert (action, urgency) == ("light", "advised"), text
    assert (got["action"], got["urgency"]) == ("light", "advised")
    assert "held free by the C allocator" in text and "not a leak" in text
    # the figure it gives is what the light cleanup's trim then returned
    assert abs(got["light_frees"] - got["trim_returned"]) < 8 * MiB, got
    assert got["trim_returned"] > 84 * MiB


@needs_glibc
def test_live_heap_growing_over_repeats_is_flagged_as_a_leak_no_cleanup_returns() -> None:
    got = run(POLICY.replace("sys.argv[1]", "'keep'"))
    reasons = {rule: (action, urgency, text) for rule, action, urgency, text in got["reasons"]}
    action, urgency, text = reasons["leak.heap"]
    assert (action, urgency) == ("none", "advised")  # in this process: restart it
    assert "16.0 MiB per synthesis" in text and "restarting the process" in text
    assert "leak" not in reasons  # the RSS rule's "a full cleanup returns it" would be wrong
    assert "cache.reclaimable" not in reasons  # nothing is held free: no light cleanup advised
    assert got["trim_returned"] < 8 * MiB  # and indeed a trim returns next to nothing


@needs_glibc
def test_heap_figures_reach_the_store_and_the_policy_history() -> None:
    """The heap is read after every event (before one only for cleanups), kept in the events
    table and read back by the policy like any other figure."""
    from monitoring import Store, Tracker
    from monitoring.policy import history_from_frame

    with Store(":memory:") as store:
        session = store.start_session("heap")
        tracker = Tracker(store=store, session_id=session)
        with tracker.track("synthesis", size=1):
            pass
        with tracker.track("cleanup", "light", releasable=True, level="light"):
            pass
        store.flush()
        events = store.events(session_id=session)
        (synthesis, cleanup) = history_from_frame(events)
    assert synthesis.host_heap_in_use.before_bytes is None  # not read: it walks the heap
    assert synthesis.host_heap_in_use.after_bytes > MiB
    assert cleanup.host_heap_in_use.before_bytes > MiB and cleanup.host_heap_in_use.after_bytes
    assert events["host_heap_in_use_after_bytes"].notna().all()
