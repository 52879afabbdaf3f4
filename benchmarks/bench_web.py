"""The dashboard's server time: every page of a 1,000-node session, and the overview of
10,000 sessions.

Each figure is the median time of a full request through the ASGI app in process (Starlette's
test client: routing, the reads, rendering), so it is what the server spends per page; the
browser's own rendering and the network are not included. The dashboard never opens the file
itself: it reads a private copy, made once per change of the files and then shared by every
request (see ``perspt_store.web._reader``), so these are warm figures; what making and opening
that copy costs, paid again after each change, is shown on its own line. So is
``verify_session``'s first run for the session (the verification badge and the Merkle page;
its verdict is then kept until the file changes).

The session is the snapshot benchmark's (``_common.session_rows``: per node 5 snapshots, 20
energy rows, 2 sheaf validations, one verification, bundle, seal and provenance; one edge per
node) plus 2 LLM requests per node. The overview store holds 10,000 sessions with 3 node
states each.

Run alone: ``python benchmarks/bench_web.py [--quick]`` (needs the ``web`` and ``test``
extras: Starlette's test client).

``--baseline-src DIR`` compares with another source tree side by side instead: the files are
built once, then each round serves every page from a fresh process of each version in turn
(the order alternating), and the table gives the median of the rounds' medians::

    git archive <commit> src | tar -x -C /tmp/before
    python benchmarks/bench_web.py --baseline-src /tmp/before/src --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import SESSION, fmt_seconds, fresh_path, print_table, session_rows, time_calls
from starlette.testclient import TestClient

import perspt_store as ps
from perspt_store.web import create_app
from perspt_store.web._reader import StoreReader

PAGES = ("", "/dag", "/energy", "/llm", "/decisions", "/sandbox", "/merkle", "/nodes/node-00500")
AIMS = {"session": 0.300, "overview": 0.100}
OVERVIEW_URLS = ("/", "/?page=200", "/?status=running", "/?q=number%209999",
                 "/?sort=task&order=asc", "/api/sessions")
SESSION_URLS = (*(f"/sessions/{SESSION}{page}" for page in PAGES), f"/api/sessions/{SESSION}")
THIS_SRC = Path(__file__).resolve().parents[1] / "src"


def big_session(nodes: int) -> Iterator[ps.Row]:
    yield from session_rows(nodes)
    for n in range(nodes):
        for k in range(2):
            yield ps.LlmRequestRecord(
                session_id=SESSION, node_id=f"node-{n:05d}", model=f"model-{k}",
                prompt="p" * 400, response="r" * 200, tokens_in=100, tokens_out=50,
                latency_ms=800 + n % 300,
            )


def many_sessions(count: int) -> Iterator[ps.Row]:
    for i in range(count):
        sid = f"session-{i:05d}"
        yield ps.SessionRecord(
            session_id=sid, task=f"task number {i}: make the thing work",
            working_dir="/src", status=("COMPLETED", "RUNNING", "FAILED")[i % 3],
        )
        for n in range(3):
            yield ps.NodeStateRecord(
                node_id=f"n{n}", session_id=sid, state="Completed", v_total=0.1,
                attempt_count=1,
            )


def timed(client: TestClient, url: str, repeat: int) -> float:
    assert client.get(url).status_code == 200, url  # warm-up (templates compiled)
    return time_calls(lambda: client.get(url), repeat).median


def build(root: Path) -> tuple[Path, Path]:
    """The 1,000-node session's file and the 10,000 sessions' file."""
    session_db = fresh_path(root, "session.db")
    overview_db = fresh_path(root, "overview.db")
    started = time.perf_counter()
    with ps.SessionStore.open(session_db) as store:
        store.record_many(big_session(1000))
    with ps.SessionStore.open(overview_db) as store:
        store.record_many(many_sessions(10_000))
    print(f"setup: {time.perf_counter() - started:.1f} s (not timed below)")
    return session_db, overview_db


def measure(session_db: Path, overview_db: Path, repeat: int) -> dict[str, float]:
    """Median seconds per URL, warm, in this process."""
    medians: dict[str, float] = {}
    for db, urls in ((session_db, SESSION_URLS), (overview_db, OVERVIEW_URLS)):
        with TestClient(create_app(db)) as client:
            for url in urls:
                medians[url] = timed(client, url, repeat)
    return medians


def side_by_side(baseline: Path, rounds: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dbs = build(Path(tmp))
        samples: dict[str, dict[str, list[float]]] = {"this": {}, "baseline": {}}
        for n in range(rounds):
            order = [("this", THIS_SRC), ("baseline", baseline)]
            for label, src in order if n % 2 == 0 else order[::-1]:
                env = {**os.environ, "PYTHONPATH": str(src)}
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", *map(str, dbs), "--repeat",
                     str(repeat)],
                    env=env, check=True, capture_output=True, text=True,
                ).stdout
                for url, seconds in json.loads(out.splitlines()[-1]).items():
                    samples[label].setdefault(url, []).append(seconds)
    rows = []
    for url in (*SESSION_URLS, *OVERVIEW_URLS):
        this = statistics.median(samples["this"][url])
        before = statistics.median(samples["baseline"][url])
        rows.append([url.replace(SESSION, "S"), fmt_seconds(this), fmt_seconds(before),
                     f"{this / before:.2f}"])
    print_table(
        f"Server time per page: median of {rounds} rounds' medians ({repeat} requests each)",
        ["page", "this tree", "baseline", "ratio"], rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="compare with this source tree, side by side")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (with --baseline-src)")
    parser.add_argument("--repeat", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 9)
    if args.measure is not None:  # a child of --baseline-src: one version's medians
        print(json.dumps(measure(*args.measure, repeat)))
        return
    if args.baseline_src is not None:
        side_by_side(args.baseline_src.resolve(), args.rounds, repeat)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        session_db, overview_db = build(root)

        rows = []
        with TestClient(create_app(session_db)) as client:
            for page in PAGES:
                url = f"/sessions/{SESSION}{page}"
                seconds = timed(client, url, repeat)
                verdict = "ok" if seconds < AIMS["session"] else "over"
                rows.append([url.replace(SESSION, "S"), fmt_seconds(seconds), "300 ms", verdict])
            api = timed(client, f"/api/sessions/{SESSION}", repeat)
            rows.append(["/api/sessions/S", fmt_seconds(api), "300 ms",
                         "ok" if api < AIMS["session"] else "over"])
        with TestClient(create_app(session_db)) as client:  # a fresh app: nothing cached
            cold = time_calls(lambda: client.get(f"/api/sessions/{SESSION}/verify"), 1).median
        rows.append(["/api/sessions/S/verify (first)", fmt_seconds(cold), "", "once"])
        def fresh_copy() -> None:
            reader = StoreReader(session_db)
            with reader.read():
                pass
            reader.close()

        fresh = time_calls(fresh_copy, repeat).median
        rows.append(["(copy the file, open + close the copy)", fmt_seconds(fresh), "",
                     "on change"])
        print_table("1,000-node session: server time per page (median)",
                    ["page", "time", "aim", ""], rows)

        rows = []
        with TestClient(create_app(overview_db)) as client:
            for url in OVERVIEW_URLS:
                seconds = timed(client, url, repeat)
                verdict = "ok" if seconds < AIMS["overview"] else "over"
                rows.append([url, fmt_seconds(seconds), "100 ms", verdict])
        print_table("Overview of 10,000 sessions: server time (median)",
                    ["page", "time", "aim", ""], rows)


if __name__ == "__main__":
    main()
