"""Start-up: ``import perspt_store`` and a listing command, as whole processes timed from outside.

Every figure is the median wall time of N fresh processes (``subprocess`` +
``time.perf_counter``), the commands interleaved round-robin so machine noise lands on all
of them alike:

* ``python -c pass``: the interpreter alone;
* the dependency floor: ``import duckdb, pydantic, blake3`` (what ``import perspt_store``
  cannot avoid);
* ``import perspt_store``, and its ratio to the floor (target: at most 1.3 times);
* the same import followed by a first use (``SessionStore`` loaded, one ``SessionRecord``
  built and validated): what a program that uses the store pays in all;
* ``perspt-store --db demo.db sessions`` on the demo database (target: at most 0.5 s), beside its
  own floor: a process that imports duckdb, click and rich, opens the file read-only and
  fetches the sessions table.

``--baseline-src DIR`` adds the same two perspt-store commands run against another source
tree (e.g. an export of an older commit's ``src``), for before/after figures in one run::

    python benchmarks/bench_startup.py                 # 15 runs of each
    git archive <commit> src | tar -x -C /tmp/before
    python benchmarks/bench_startup.py --baseline-src /tmp/before/src -n 21

Run it on its own (not by ``run.py``): it measures process start-up, which other load on the
machine moves directly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

FLOOR_IMPORT = "import duckdb, pydantic, blake3"
FIRST_USE = (
    "import perspt_store as ps\n"
    "ps.SessionStore\n"
    "ps.SessionRecord(session_id='s', task='t', working_dir='/w')\n"
)
FLOOR_CLI = (
    "import sys, duckdb, click, rich\n"
    "con = duckdb.connect(sys.argv[1], read_only=True)\n"
    "print(len(con.execute('SELECT * FROM sessions ORDER BY created_at').fetchall()))\n"
)


def _cli_command() -> list[str]:
    """The ``perspt-store`` console script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("perspt-store")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "perspt_store"]  # pragma: no cover - no console script


def _env(src: Path | None, pycache: Path) -> dict[str, str]:
    """The children's environment: ``src`` first on the path, and bytecode cached (in
    ``pycache``, not beside the sources), as an installed package has it: with
    ``PYTHONDONTWRITEBYTECODE`` every run would compile every module from source."""
    env = dict(os.environ)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if src is None:
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = str(src)
    env["COLUMNS"] = "120"
    return env


def _run_once(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one process; CPU time moves less than
    wall time when other jobs share the machine."""
    start = time.perf_counter()
    child = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv!r} failed ({child.returncode}):\n{err.decode()}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=15, help="processes per command")
    parser.add_argument("--src", type=Path, default=SRC, help="the source tree to measure")
    parser.add_argument(
        "--baseline-src", type=Path, default=None, help="a second source tree (before)"
    )
    args = parser.parse_args(argv)

    py = sys.executable
    trees: list[tuple[str, Path]] = [("", args.src.resolve())]
    if args.baseline_src is not None:
        trees.insert(0, ("before: ", args.baseline_src.resolve()))

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        demo = Path(tmp) / "demo.db"
        pycache = Path(tmp) / "pycache"
        cli = _cli_command()
        subprocess.run(
            [*cli, "--db", str(demo), "demo"],
            env=_env(args.src.resolve(), pycache),
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        commands: list[tuple[str, list[str], dict[str, str]]] = [
            ("python -c pass", [py, "-c", "pass"], _env(None, pycache)),
            (f"floor: {FLOOR_IMPORT}", [py, "-c", FLOOR_IMPORT], _env(None, pycache)),
        ]
        for label, src in trees:
            commands.append(
                (
                    f"{label}import perspt_store",
                    [py, "-c", "import perspt_store"],
                    _env(src, pycache),
                )
            )
        for label, src in trees:
            commands.append(
                (f"{label}import + first use", [py, "-c", FIRST_USE], _env(src, pycache))
            )
        commands.append(
            (
                "floor: duckdb+click+rich, read sessions",
                [py, "-c", FLOOR_CLI, str(demo)],
                _env(None, pycache),
            )
        )
        for label, src in trees:
            commands.append(
                (
                    f"{label}perspt-store --db demo.db sessions",
                    [*cli, "--db", str(demo), "sessions"],
                    _env(src, pycache),
                )
            )

        for _, cmd, env in commands:  # warm the OS caches and the bytecode caches
            _run_once(cmd, env, tmp)
        wall: dict[str, list[float]] = {label: [] for label, _, _ in commands}
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in commands}
        for _ in range(args.runs):
            for label, cmd, env in commands:
                w, c = _run_once(cmd, env, tmp)
                wall[label].append(w)
                cpu[label].append(c)

    med = {label: statistics.median(ts) for label, ts in wall.items()}
    med_cpu = {label: statistics.median(ts) for label, ts in cpu.items()}
    floor_import = f"floor: {FLOOR_IMPORT}"
    floor_cli = "floor: duckdb+click+rich, read sessions"
    print(f"start-up, median of {args.runs} processes each (interleaved), {py}")
    print(f"{'command':<48} {'wall':>7} {'min':>7} {'cpu':>7}  ratio (wall, cpu)")
    for label, ts in wall.items():
        ratio = ""
        if label.startswith(("import", "before: import")):
            ratio = (
                f"{med[label] / med[floor_import]:.2f}x, "
                f"{med_cpu[label] / med_cpu[floor_import]:.2f}x the import floor"
                + (" (target <= 1.30x)" if label.endswith("perspt_store") else "")
            )
        elif label.endswith("sessions") and "perspt-store" in label:
            ratio = (
                f"{med[label] / med[floor_cli]:.2f}x, {med_cpu[label] / med_cpu[floor_cli]:.2f}x"
                " its floor (target <= 0.50 s wall)"
            )
        print(
            f"{label:<48} {med[label] * 1000:5.0f}ms {min(ts) * 1000:5.0f}ms"
            f" {med_cpu[label] * 1000:5.0f}ms  {ratio}"
        )


if __name__ == "__main__":
    main()
