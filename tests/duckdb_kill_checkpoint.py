"""DuckDB alone, no perspt-store: how often does a SIGKILL leave a file DuckDB cannot open?

A writer process inserts rows in a loop with ``checkpoint_threshold = '64KB'`` (so it
checkpoints all the time); it is killed after a random delay, and the file is opened
read-only. DuckDB rewrites its metadata block (block 0, at byte 12288) in place at every
checkpoint, so a kill inside that 256 kB write can leave it failing its checksum:
"Corrupt database file: computed checksum ... in block at location 12288". Damaged files
are kept (renamed ``*.bad<round>``) for inspection. See docs/reliability.md.

    python tests/duckdb_kill_checkpoint.py --rounds 400 --storage v1.5.0
    python tests/duckdb_kill_checkpoint.py --rounds 400 --storage latest
    strace -f -e trace=pwrite64 python tests/duckdb_kill_checkpoint.py --rounds 1  # the writes

Not collected by pytest: it measures the engine, and a damaged file is a rare event.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

WRITER = r"""
import os, sys, duckdb
path, storage = sys.argv[1], sys.argv[2]
if not os.path.exists(path) and storage != "latest":
    duckdb.connect(path, config={"storage_compatibility_version": storage}).close()
c = duckdb.connect(path)
c.execute("SET checkpoint_threshold = '64KB'")
c.execute("CREATE SEQUENCE IF NOT EXISTS s")
c.execute("CREATE TABLE IF NOT EXISTS t (id BIGINT DEFAULT nextval('s') PRIMARY KEY, "
          "a VARCHAR, b DOUBLE, h BLOB)")
c.execute("CREATE INDEX IF NOT EXISTS ti ON t (a)")
print("ready", flush=True)
i = 0
while True:
    i += 1
    c.execute("INSERT INTO t (a, b, h) VALUES (?, ?, ?)",
              [f"node-{i % 50}-" + "x" * (i % 200), i * 0.1, os.urandom(32)])
    if i % 50 == 0:
        c.executemany("INSERT INTO t (a, b, h) VALUES (?, ?, ?)",
                      [[f"b{j}", j * 1.0, os.urandom(32)] for j in range(20)])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--storage", default="v1.5.0", help="a storage version, or latest")
    parser.add_argument("--max-delay", type=float, default=0.3)
    parser.add_argument("--dir", type=Path, help="where to keep files (default: a temp dir)")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="duckdb-kill-"))
    directory.mkdir(parents=True, exist_ok=True)
    damaged = 0
    for r in range(args.rounds):
        path = directory / f"file{r // 20}.db"  # twenty kills per file
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), args.storage],
            stdout=subprocess.PIPE, text=True,
        )
        assert writer.stdout is not None
        writer.stdout.readline()
        time.sleep(random.uniform(0, args.max_delay))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        try:
            duckdb.connect(str(path), read_only=True).close()
        except duckdb.Error as exc:
            damaged += 1
            print(f"round {r}: {path.name} damaged: {exc}", flush=True)
            for p in (path, path.with_name(path.name + ".wal")):
                if p.exists():
                    p.rename(p.with_name(f"{p.name}.bad{r}"))
    print(f"DuckDB {duckdb.__version__}, storage {args.storage}: {damaged} damaged files "
          f"in {args.rounds} kills ({directory})")


if __name__ == "__main__":
    main()
