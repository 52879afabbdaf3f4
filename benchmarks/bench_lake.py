"""Several exporters writing into one Parquet lake at once: the figures of the "Lake" section
of docs/reliability.md.

1. Throughput and the lake's lock: 1, 2 and 4 processes export 40 sessions between them
   (one export per session) into one lake; wall time, and how long exporters waited for the
   lock and held it. Every session must be in the manifest and import and verify.
2. Killed exporters: rounds of 3 processes that export random sessions and SIGKILL
   themselves at a random rename inside the lake (so inside the critical section); after
   every round the lake is imported: every session must import and verify.
3. Imports during exports: 3 processes keep committing to their sessions and re-exporting
   them while this process imports the lake again and again; no session may fail.

Run: ``python benchmarks/bench_lake.py`` (``--quick`` for fewer rounds). POSIX only (part 2
uses SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import perspt_store as ps
import perspt_store.lake as lake_module
from perspt_store.lake import MANIFEST, export_parquet, import_lake


def make_store(db: Path, prefix: str, sessions: int, commits: int = 5) -> None:
    with ps.SessionStore.open(db, publish_interval=None) as store:
        for i in range(sessions):
            sid = f"{prefix}-s{i:02d}"
            store.create_session(ps.SessionRecord(session_id=sid, task="t", working_dir="/w"))
            for j in range(commits):
                store.record_node_state(
                    ps.NodeStateRecord(session_id=sid, node_id=f"n{j}", state="x"))
                store.record_energy(ps.EnergyRecord(session_id=sid, node_id=f"n{j}", v_total=j))
                store.record_llm_request(ps.LlmRequestRecord(
                    session_id=sid, node_id=f"n{j}", model="m", prompt="p", response="r"))


def check_lake(lake: Path) -> int:
    """Import the lake into a fresh store; every session must import and verify."""
    with ps.SessionStore.in_memory() as central:
        report = import_lake(central, lake)
        bad = [s for s in report.sessions if s.status != "imported"]
        assert not bad, bad
        assert all(central.verify_session(sid).ok for sid in report.imported)
        return len(report.imported)


# --- workers (run in their own processes) ------------------------------------------------------


def worker_export(db: str, lake: str, go: str) -> None:
    """Export each session of the store on its own, timing the lake's lock."""
    waits: list[float] = []
    holds: list[float] = []
    acquire, release = lake_module._LakeLock.acquire, lake_module._LakeLock.release
    taken: list[float] = []

    def timed_acquire(self: lake_module._LakeLock) -> None:
        start = time.perf_counter()
        acquire(self)
        taken.append(time.perf_counter())
        waits.append(taken[-1] - start)

    def timed_release(self: lake_module._LakeLock) -> None:
        holds.append(time.perf_counter() - taken[-1])
        release(self)

    lake_module._LakeLock.acquire = timed_acquire  # type: ignore[method-assign]
    lake_module._LakeLock.release = timed_release  # type: ignore[method-assign]
    with ps.SessionStore.open_read_only(db) as store:
        ids = [sid for (sid,) in store.sql("SELECT session_id FROM sessions").fetchall()]
        while not Path(go).exists():
            time.sleep(0.001)
        start = time.perf_counter()
        for sid in ids:
            assert export_parquet(store, lake, [sid]).ok
        wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "waits": waits, "holds": holds}))


def worker_suicidal(db: str, lake: str, rounds: str) -> None:
    """Export random sessions; SIGKILL this process at a random rename inside the lake."""
    root = os.path.realpath(lake)

    def patched(real):  # type: ignore[no-untyped-def]
        def rename(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
            if os.path.realpath(str(dst)).startswith(root) and random.random() < 0.04:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)

        return rename

    os.replace, os.rename = patched(os.replace), patched(os.rename)
    with ps.SessionStore.open_read_only(db) as store:
        ids = [sid for (sid,) in store.sql("SELECT session_id FROM sessions").fetchall()]
        for _ in range(int(rounds)):
            export_parquet(store, lake, random.sample(ids, random.randint(1, 4)))


def worker_live(db: str, lake: str, rounds: str, prefix: str) -> None:
    """Commit to three of six sessions, export them; again and again."""
    with ps.SessionStore.open(db, publish_interval=None) as store:
        ids = [f"{prefix}-s{i}" for i in range(6)]
        for sid in ids:
            if store.get_session(sid) is None:
                store.create_session(ps.SessionRecord(session_id=sid, task="t", working_dir="/w"))
        for r in range(int(rounds)):
            picked = random.sample(ids, 3)
            for sid in picked:
                store.record_node_state(
                    ps.NodeStateRecord(session_id=sid, node_id=f"n{r % 5}", state=f"r{r}"))
                store.record_energy(ps.EnergyRecord(session_id=sid, node_id="n", v_total=r))
                store.update_session_status(sid, f"R{r}")
            assert export_parquet(store, lake, picked).ok


def spawn(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--worker", *args], text=True,
                            **kwargs)  # type: ignore[call-overload]


# --- the three parts ---------------------------------------------------------------------------


def throughput(root: Path) -> None:
    print("exporters  exports  wall s  exports/s  lock wait ms (median / p95)  "
          "lock held ms (median / p95)  in manifest, imported")
    for procs in (1, 2, 4):
        lake, go = root / f"lake-{procs}", root / f"go-{procs}"
        dbs = [root / f"t{procs}-p{p}.db" for p in range(procs)]
        for p, db in enumerate(dbs):
            make_store(db, f"t{procs}p{p}", 40 // procs)
        workers = [spawn("export", str(db), str(lake), str(go), stdout=subprocess.PIPE)
                   for db in dbs]
        time.sleep(2.0)  # let every worker start up before the start signal
        go.touch()
        outs = [json.loads(w.communicate(timeout=600)[0]) for w in workers]
        waits = sorted(x * 1000 for o in outs for x in o["waits"])
        holds = sorted(x * 1000 for o in outs for x in o["holds"])
        wall = max(o["wall"] for o in outs)
        listed = len(json.loads((lake / MANIFEST).read_text())["sessions"])

        def p95(values: list[float]) -> float:
            return values[min(len(values) - 1, int(0.95 * len(values)))]

        print(f"{procs:9d}  {len(waits):7d}  {wall:6.2f}  {len(waits) / wall:9.1f}  "
              f"{statistics.median(waits):12.1f} / {p95(waits):5.1f}  "
              f"{statistics.median(holds):22.1f} / {p95(holds):5.1f}  "
              f"{listed}, {check_lake(lake)}")


def kills(root: Path, rounds: int) -> None:
    lake = root / "lake-kills"
    dbs = [root / f"k-p{p}.db" for p in range(3)]
    for p, db in enumerate(dbs):
        make_store(db, f"k{p}", 10, commits=3)
    deaths = journals = 0
    for _ in range(rounds):
        workers = [spawn("suicidal", str(db), str(lake), "8", stderr=subprocess.PIPE)
                   for db in dbs]
        for w in workers:
            _, err = w.communicate(timeout=600)
            assert w.returncode in (0, -signal.SIGKILL), err
            deaths += w.returncode == -signal.SIGKILL
        journals += (lake / lake_module._JOURNAL).exists()
        check_lake(lake)  # rolls a dead exporter's journal forward first
    print(f"{rounds} rounds of 3 exporters: {deaths} killed inside the lake's critical section, "
          f"{journals} rounds ended with a dead exporter's journal; every round the lake "
          f"imported every session and verified")


def imports_during_exports(root: Path, rounds: int) -> None:
    lake = root / "lake-live"
    dbs = [root / f"l-p{p}.db" for p in range(3)]
    for p, db in enumerate(dbs):
        spawn("live", str(db), str(lake), "1", f"l{p}").wait(timeout=600)
    workers = [spawn("live", str(db), str(lake), str(rounds), f"l{p}")
               for p, db in enumerate(dbs)]
    imports = sessions = failed = 0
    while any(w.poll() is None for w in workers):
        with ps.SessionStore.in_memory() as central:
            report = import_lake(central, lake)
            imports += 1
            sessions += len(report.sessions)
            failed += sum(s.status != "imported" for s in report.sessions)
            assert all(central.verify_session(sid).ok for sid in report.imported)
    assert all(w.returncode == 0 for w in workers)
    print(f"{imports} imports while 3 exporters re-exported {3 * rounds} times: "
          f"{sessions} session imports, {failed} failed")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, *args = sys.argv[2:]
        {"export": worker_export, "suicidal": worker_suicidal, "live": worker_live}[kind](*args)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    try:
        throughput(root)
        kills(root, 4 if args.quick else 15)
        imports_during_exports(root, 50 if args.quick else 200)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
