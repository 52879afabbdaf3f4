"""The display mixin: renderers are named on each class and loaded on first use only."""

from __future__ import annotations

import subprocess
import sys

import perspt_store as ps
from perspt_store import _display
from perspt_store._displayable import Displayable
from perspt_store.delta import DeltaExportReport, LakeVerification


def test_import_perspt_store_does_not_load_the_renderers() -> None:
    code = "import sys, perspt_store; print('perspt_store._display' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_every_displayable_class_names_renderers_that_exist() -> None:
    classes = [
        ps.Row, ps.SessionSnapshot, ps.NodeReviewSummary, ps.SessionReviewSummary,
        ps.VerificationReport, ps.ExportReport, ps.ImportReport, DeltaExportReport,
        LakeVerification,
    ]
    for cls in classes:
        assert issubclass(cls, Displayable), cls
        for name in (cls._html_renderer, cls._text_renderer):
            assert name is None or callable(getattr(_display, name)), (cls, name)


def test_without_a_text_renderer_repr_is_the_next_classs() -> None:
    row = ps.SessionRecord(session_id="s", task="t", working_dir="/w", status="RUNNING")
    assert repr(row).startswith("SessionRecord(session_id='s', ")  # pydantic's
    assert row._repr_html_().startswith('<div class="perspt-store">')
