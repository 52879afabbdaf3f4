"""An agent stand-in for the dashboard's browser tests: holds the database read-write (so
readers see its published snapshot), commits one node state, then waits.

Usage: python web_writer.py DB SESSION NODE — prints ``committed`` once the state is written,
and closes the store when its stdin closes.
"""

from __future__ import annotations

import sys

import perspt_store as ps


def main(db: str, session_id: str, node_id: str) -> None:
    # Once, without retrying: the dashboard never holds the file (docs/dashboard.md).
    store = ps.SessionStore.open(db, publish_interval=0.5)
    with store:
        store.record_node_state(
            ps.NodeStateRecord(
                node_id=node_id,
                session_id=session_id,
                state="RUNNING",
                v_total=0.75,
                attempt_count=1,
                goal="added while you watch",
            )
        )
        print("committed", flush=True)
        sys.stdin.read()  # hold the file until the test is done


if __name__ == "__main__":
    main(*sys.argv[1:4])
