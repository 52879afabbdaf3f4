"""``python -m perspt_store``: the ``perspt-store`` command line (needs the ``cli`` extra)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
