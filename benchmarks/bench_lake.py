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

The Delta lake (``--delta``: the figures of docs/performance.md and the Delta part of
docs/reliability.md; needs the ``lake`` extra):

4. Throughput: one process exporting 40 demo sessions one by one into a growing lake (no
   contention); then 100 demo-size sessions exported from 4 processes (25 exports each, one
   session per export) into one Delta lake, against the same into one Parquet lake; rows/s
   and seconds per session; then the whole lake read back with Polars.
5. Races: 4 processes x 25 exports into one lake, their own sessions (re-exported after
   more commits) and one shared session exported from copies of one history at different
   lengths; every session must import, and the latest versions hold every row once.
6. Killed exporters: an exporter SIGKILLed at a random Delta write (at the latest its
   checkpoint's), again and again; after each, every session imports as it was.

Run: ``python benchmarks/bench_lake.py`` (``--quick`` for fewer rounds; ``--delta`` for
parts 4-6 only). POSIX only (parts 2 and 6 use SIGKILL).
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


def worker_bulk(db: str, lake: str, go: str, kind: str) -> None:
    """Export each session of the store on its own into a Delta or a Parquet lake."""
    from perspt_store.delta import export_delta

    export = export_parquet if kind == "parquet" else export_delta
    with ps.SessionStore.open_read_only(db) as store:
        ids = [sid for (sid,) in store.sql("SELECT session_id FROM sessions").fetchall()]
        while not Path(go).exists():
            time.sleep(0.001)
        start = time.perf_counter()
        if kind == "delta-batch":  # every session of the store in one export
            assert export(store, lake, ids).ok
        for sid in ids if kind != "delta-batch" else []:
            assert export(store, lake, [sid]).ok
        wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "sessions": len(ids)}))


def worker_race(lake: str, go: str, jobs: str) -> None:
    """Run export jobs ``[db, [session ids], commit first]``; print each one's outcome."""
    from perspt_store.delta import export_delta

    while not Path(go).exists():
        time.sleep(0.001)
    out = []
    for db, sids, extend in json.loads(jobs):
        if extend:
            with ps.SessionStore.open(db, publish_interval=None) as store:
                for sid in sids:
                    store.record_node_state(ps.NodeStateRecord(
                        session_id=sid, node_id="grow", state=str(time.time_ns())))
        with ps.SessionStore.open_read_only(db) as store:
            report = export_delta(store, lake, sids)
        out.append({"exported": len(report.session_ids), "unchanged": len(report.unchanged),
                    "conflicts": [c.detail for c in report.conflicts]})
    print(json.dumps(out))


def worker_delta_suicidal(db: str, lake: str) -> None:
    """Export every session; SIGKILL this process at a random Delta write."""
    import perspt_store.delta as delta

    write = delta._write
    n = random.randint(1, 8)
    calls = [0]

    def killing(table, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        # The nth write, or the checkpoint's if the export has fewer (it writes the tables
        # whose rows changed).
        if calls[0] == n or table.table_uri.rstrip("/").endswith(delta.CHECKPOINTS):
            os.kill(os.getpid(), signal.SIGKILL)
        return write(table, *args, **kwargs)

    delta._write = killing  # type: ignore[assignment]
    with ps.SessionStore.open_read_only(db) as store:
        delta.export_delta(store, lake)


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


def lake_rows(lake: Path) -> int:
    """Every row of every table of a Delta lake's latest versions, read with Polars."""
    import polars as pl

    from perspt_store.lake import LAKE_TABLES

    return sum(pl.scan_delta(str(lake / t)).select(pl.len()).collect().item()
               for t in LAKE_TABLES)


def delta_throughput(root: Path, sessions: int) -> None:
    import polars as pl

    from perspt_store.demo import record_demo_session
    from perspt_store.lake import LAKE_TABLES

    procs = 4
    dbs = [root / f"d-p{p}.db" for p in range(procs)]
    rows = 0
    for p, db in enumerate(dbs):
        with ps.SessionStore.open(db, publish_interval=None) as store:
            for i in range(sessions // procs):
                record_demo_session(store, f"p{p}-demo-{i:03d}", seed=100 * p + i)
            rows += store.sql("SELECT " + " + ".join(
                f"(SELECT count(*) FROM {t})" for t in LAKE_TABLES)).fetchall()[0][0]
    print(f"{sessions} demo sessions ({rows} rows) from {procs} processes, one export per "
          "session (delta-batch: one export of all its sessions per process):")
    print("lake         wall s  s/session  rows/s  read back with Polars")
    for kind in ("parquet", "delta", "delta-batch"):
        lake, go = root / f"bulk-{kind}", root / f"go-{kind}"
        workers = [spawn("bulk", str(db), str(lake), str(go), kind, stdout=subprocess.PIPE)
                   for db in dbs]
        time.sleep(2.0)
        go.touch()
        outs = [json.loads(w.communicate(timeout=3600)[0]) for w in workers]
        wall = max(o["wall"] for o in outs)
        start = time.perf_counter()
        if kind != "parquet":
            read = sum(pl.read_delta(str(lake / t)).height for t in LAKE_TABLES)
        else:
            read = sum(pl.read_parquet(str(lake / t / "*" / "*.parquet")).height
                       for t in LAKE_TABLES if any((lake / t).glob("*/*.parquet")))
        seconds = time.perf_counter() - start
        assert read == rows, (read, rows)
        print(f"{kind:11s}  {wall:6.1f}  {wall * procs / sessions:9.2f}  {rows / wall:6.0f}  "
              f"{read} rows in {seconds:.2f} s")


def delta_single(root: Path, sessions: int) -> None:
    """One process, no contention: each demo session exported on its own into a growing
    lake (the first and last 10 exports' medians), then an unchanged re-export of all."""
    from perspt_store.delta import export_delta
    from perspt_store.demo import record_demo_session

    db, lake = root / "single.db", root / "single-lake"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        for i in range(sessions):
            record_demo_session(store, f"d{i:03d}", seed=i)
    times = []
    with ps.SessionStore.open_read_only(db) as store:
        for i in range(sessions):
            start = time.perf_counter()
            assert export_delta(store, lake, [f"d{i:03d}"]).ok
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert not export_delta(store, lake).session_ids
        whole = time.perf_counter() - start
    print(f"1 process, {sessions} demo sessions one per export into one Delta lake: median "
          f"{statistics.median(times[:10]):.2f} s for the first 10 exports, "
          f"{statistics.median(times[-10:]):.2f} s for the last 10; an unchanged re-export "
          f"of all {sessions}: {whole:.2f} s")


def delta_races(root: Path, exports: int) -> None:
    from perspt_store.demo import record_demo_session
    from perspt_store.lake import LAKE_TABLES

    lake = root / "race-lake"
    history = root / "race-history.db"
    with ps.SessionStore.open(history, publish_interval=None) as store:
        store.create_session(ps.SessionRecord(session_id="shared", task="t", working_dir="/"))
    prefixes = []
    for size in range(1, 9):
        with ps.SessionStore.open(history, publish_interval=None) as store:
            store.record_node_state(
                ps.NodeStateRecord(session_id="shared", node_id=f"n{size}", state="x"))
        prefixes.append(root / f"race-shared-{size}.db")
        shutil.copyfile(history, prefixes[-1])
    work = []
    for p in range(4):
        own = root / f"race-p{p}.db"
        with ps.SessionStore.open(own, publish_interval=None) as store:
            for i in range(5):
                record_demo_session(store, f"r{p}-{i}", seed=10 * p + i)
        jobs: list[list[object]] = []
        for j in range(exports):
            if j % 6 == 2:
                jobs.append([str(prefixes[p if j < exports // 2 else p + 4]), ["shared"], False])
            else:
                jobs.append([str(own), [f"r{p}-{j % 5}"], j >= 5])
        work.append(jobs)
    go = root / "race-go"
    workers = [spawn("race", str(lake), str(go), json.dumps(jobs), stdout=subprocess.PIPE)
               for jobs in work]
    time.sleep(2.0)
    go.touch()
    start = time.perf_counter()
    outs = [json.loads(w.communicate(timeout=3600)[0]) for w in workers]
    wall = time.perf_counter() - start
    done = [r for out in outs for r in out]
    behind = sum("behind" in d for r in done for d in r["conflicts"])
    other = [d for r in done for d in r["conflicts"] if "behind" not in d]
    assert not other, other
    expected = 0
    with ps.SessionStore.in_memory() as central:
        report = import_lake(central, lake)
        assert report.ok and len(report.imported) == 21, report
        expected = central.sql("SELECT " + " + ".join(
            f"(SELECT count(*) FROM {t})" for t in LAKE_TABLES)).fetchall()[0][0]
        with ps.SessionStore.open_read_only(prefixes[-1]) as longest:
            assert central.log_root("shared") == longest.log_root("shared")
    assert lake_rows(lake) == expected  # the latest versions: every row once
    print(f"4 processes x {exports} exports in {wall:.1f} s: "
          f"{sum(r['exported'] for r in done)} sessions written, "
          f"{sum(r['unchanged'] for r in done)} unchanged, {behind} shared-session exports "
          f"behind a longer copy (conflicts, as they must be); 21 sessions imported and "
          f"verified, the longest shared log in the lake, {expected} rows, each once")


def delta_kills(root: Path, rounds: int) -> None:
    from perspt_store.demo import record_demo_session

    lake, db = root / "kill-lake", root / "kill.db"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        for i in range(3):
            record_demo_session(store, f"k-{i}", seed=i)
    from perspt_store.delta import export_delta

    with ps.SessionStore.open_read_only(db) as store:
        export_delta(store, lake)
    killed = 0
    for r in range(rounds):
        with ps.SessionStore.open(db, publish_interval=None) as store:
            before = {f"k-{i}": store.log_root(f"k-{i}") for i in range(3)}
            for i in range(3):
                store.record_node_state(
                    ps.NodeStateRecord(session_id=f"k-{i}", node_id="more", state=str(r)))
        proc = spawn("delta-suicidal", str(db), str(lake), stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, err
        killed += 1
        with ps.SessionStore.in_memory() as central:
            report = import_lake(central, lake)
            assert report.ok and all(central.log_root(s) == before[s] for s in before)
        with ps.SessionStore.open_read_only(db) as store:
            assert export_delta(store, lake).ok  # and the next export goes through
    print(f"{killed} exporters SIGKILLed at a random Delta write: after each, every session "
          "imported as it was before, verified, and the next export went through")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, *args = sys.argv[2:]
        {"export": worker_export, "suicidal": worker_suicidal, "live": worker_live,
         "bulk": worker_bulk, "race": worker_race,
         "delta-suicidal": worker_delta_suicidal}[kind](*args)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--delta", action="store_true", help="the Delta lake's parts only")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    try:
        if args.delta:
            delta_single(root, 20 if args.quick else 40)
            delta_throughput(root, 20 if args.quick else 100)
            delta_races(root, 12 if args.quick else 25)
            delta_kills(root, 3 if args.quick else 10)
            return
        throughput(root)
        kills(root, 4 if args.quick else 15)
        imports_during_exports(root, 50 if args.quick else 200)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
