"""How many of the package's source files three everyday calls pass through.

Not a timing: a count of the distinct ``perspt_store`` files a call runs code in (after a
warm-up, so imports do not count) and how often it switches from one file to another,
for ``record_node_state``, ``load_session_snapshot`` and ``verify_session``. The figures
go in docs/architecture.md.

    python benchmarks/walk_calls.py                          # this checkout
    python benchmarks/walk_calls.py --baseline-src OLD/src   # and another, side by side
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any


def _walk(root: str, call: Callable[[], object]) -> list[str]:
    files: list[str] = []

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        name = frame.f_code.co_filename
        if event == "call" and name.startswith(root):
            here = os.path.relpath(name, root)
            if not files or files[-1] != here:
                files.append(here)

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return files


def measure() -> dict[str, dict[str, Any]]:
    import perspt_store as ps

    store = ps.SessionStore.in_memory()
    store.create_session(
        ps.SessionRecord(session_id="s", task="t", working_dir="/w", status="RUNNING")
    )
    made = iter(range(1_000_000))

    def commit() -> None:
        k = next(made)
        store.record_node_state(
            ps.NodeStateRecord(session_id="s", node_id=f"n{k % 5}", state="RUNNING", v_total=k)
        )

    for _ in range(10):  # warm-up: imports and caches
        commit()
        store.record_energy(ps.EnergyRecord(session_id="s", node_id="n0", v_total=1.0))
    store.load_session_snapshot("s")
    store.verify_session("s")
    root = os.path.dirname(ps.__file__)
    calls: dict[str, Callable[[], object]] = {
        "record_node_state": commit,
        "load_session_snapshot": lambda: store.load_session_snapshot("s"),
        "verify_session": lambda: store.verify_session("s"),
    }
    result = {}
    for name, call in calls.items():
        files = _walk(root, call)
        result[name] = {"files": sorted(set(files)), "switches": len(files)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", help="another checkout's src/ to compare with")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure()))
        return
    runs = {"this checkout": measure()}
    if args.baseline_src:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(args.baseline_src)}
        out = subprocess.run(
            [sys.executable, __file__, "--json"], env=env, check=True, capture_output=True
        ).stdout
        runs["baseline"] = json.loads(out)
    for label, result in runs.items():
        print(f"{label}:")
        for name, walk in result.items():
            print(
                f"  {name:<22} {len(walk['files'])} files, {walk['switches']:>3} switches"
                f"  ({', '.join(walk['files'])})"
            )


if __name__ == "__main__":
    main()
