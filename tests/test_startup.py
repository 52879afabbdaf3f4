"""Start-up: what ``import perspt_store`` defers, and that deferring changes nothing.

The row models are built on first use (``defer_build``), their field descriptions come from
one parse of ``rows.py``, and the optional modules (lake, frames, plots, web, delta, aio,
the command line) are imported only when used. Each check that depends on a fresh
interpreter runs in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest
from pydantic._internal._docs_extraction import extract_docstrings_from_cls

import perspt_store as ps


def _run(code: str) -> str:
    env = dict(os.environ)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("model", list(ps.ROW_MODELS.values()), ids=list(ps.ROW_MODELS))
def test_field_descriptions_are_the_attribute_docstrings(model: type[ps.Row]) -> None:
    """The same descriptions pydantic's ``use_attribute_docstrings`` gave, for every field."""
    expected = extract_docstrings_from_cls(model, use_inspect=True)
    got = {name: field.description for name, field in model.model_fields.items()}
    assert got == {name: expected.get(name) for name in model.model_fields}
    assert all(got.values()), model  # every column is documented (docs/schema.md)
    schema = model.model_json_schema()["properties"]
    assert {name: schema[name].get("description") for name in got} == got


def test_import_builds_no_row_model_and_loads_no_optional_module() -> None:
    out = _run(
        """
        import sys
        import perspt_store as ps
        from perspt_store import rows
        built = [m.__name__ for m in rows.ROW_MODELS.values() if m.__pydantic_complete__]
        heavy = sorted(
            name for name in sys.modules
            if name.split(".")[0] in ("rich", "click", "pyarrow", "polars", "pandas",
                                       "deltalake", "anyio", "starlette", "matplotlib")
            or name.startswith(("perspt_store.lake",
                                "perspt_store.plots", "perspt_store.web",
                                "perspt_store.delta", "perspt_store.aio",
                                "perspt_store.cli"))
        )
        print(built, heavy)
        """
    )
    assert out.split() == ["[]", "[]"]


def test_a_listing_command_imports_only_its_own_command_module(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    with ps.SessionStore.open(db, publish_interval=None) as store:
        store.create_session(ps.SessionRecord(session_id="s1", task="t", working_dir="/w"))
    out = _run(
        f"""
        import contextlib, io, sys
        from perspt_store.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as shown:
            try:
                main(["--db", {str(db)!r}, "sessions", "--json"])
            except SystemExit as exc:
                assert not exc.code, exc.code
        assert '"s1"' in shown.getvalue(), shown.getvalue()
        print(sorted(m for m in sys.modules if m.startswith("perspt_store.cli.")
                     or m in ("perspt_store.lake", "perspt_store.delta", "perspt_store.plots",
                              "perspt_store.web", "perspt_store.aio")))
        """
    )
    assert out.strip() == str(
        ["perspt_store.cli._app", "perspt_store.cli._common", "perspt_store.cli._output",
         "perspt_store.cli._sessions"]
    )


def test_import_loads_only_the_errors() -> None:
    out = _run(
        """
        import sys
        import perspt_store
        print(sorted(m for m in sys.modules if m.startswith(("perspt_store", "pydantic."))))
        """
    )
    assert out.strip() == "['perspt_store', 'perspt_store.errors']"


# Names whose module needs an extra that the base install lacks (tested in their own files).
_EXTRAS = {"AsyncSessionStore", "export_delta"}


def test_every_public_name_imports_alone_in_a_fresh_interpreter() -> None:
    """``from perspt_store import X`` for every name in ``__all__``, each in a new process
    (so no earlier import has loaded its module), gives the defining module's object; and
    ``dir()`` lists ``__all__`` before anything is loaded."""
    names = [name for name in ps.__all__ if name not in _EXTRAS]
    out = _run(
        f"""
        import importlib, subprocess, sys
        import perspt_store
        assert set(perspt_store.__all__) <= set(dir(perspt_store)), "dir"
        names = {names!r}
        code = (
            "import importlib, perspt_store\\n"
            "from perspt_store import {{0}} as got\\n"
            "home = perspt_store._LAZY.get({{0!r}})\\n"
            "mod = importlib.import_module('perspt_store.' + home) if home else perspt_store\\n"
            "assert got is getattr(mod, {{0!r}}), {{0!r}}\\n"
        )
        bad = [n for n in names
               if subprocess.run([sys.executable, "-c", code.format(n)]).returncode != 0]
        print(bad)
        """
    )
    assert out.strip() == "[]"


def test_every_module_imports_first() -> None:
    """Each module of the package can be the first one imported (a lazy package makes import
    cycles show only in the order a user happens to import in: ``import perspt_store.frames``
    first once failed on ``store/`` importing ``frames``). One process, the package's modules
    dropped from ``sys.modules`` before each import."""
    out = _run(
        """
        import importlib, pathlib, sys, traceback
        import perspt_store
        root = pathlib.Path(perspt_store.__file__).parent
        names = sorted(
            "perspt_store." + ".".join(p.relative_to(root).with_suffix("").parts)
            .removesuffix(".__init__")
            for p in root.rglob("*.py") if p.name != "__main__.py"
        )
        bad = []
        for name in names:
            for loaded in [m for m in sys.modules if m.startswith("perspt_store")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name.removesuffix("."))
            except ImportError as exc:
                if "extra" not in str(exc):  # an optional dependency this venv lacks
                    bad.append((name, repr(exc)))
        print(len(names), bad)
        """
    )
    count, bad = out.split(" ", 1)
    assert int(count) > 40 and bad.strip() == "[]", out


def test_submodules_loaded_before_stay_attributes() -> None:
    out = _run(
        """
        import perspt_store as ps
        print(ps.rows.SessionRecord is ps.SessionRecord, ps.merkle.__name__, ps.store.__name__)
        try:
            ps.no_such_name
        except AttributeError as exc:
            print(exc)
        """
    )
    assert out.splitlines() == [
        "True perspt_store.merkle perspt_store.store",
        "module 'perspt_store' has no attribute 'no_such_name'",
    ]


def test_first_use_of_a_deferred_model_validates_as_before() -> None:
    """Built on first use, from a frame whose locals shadow the module's type aliases
    (pydantic reads the caller's namespace when it builds a deferred model)."""
    out = _run(
        """
        import pydantic
        import perspt_store as ps

        def first_use():
            Int32 = str  # noqa: F841 - must not leak into the model's types
            Real = str  # noqa: F841
            StrList = str  # noqa: F841
            bad = []
            for kwargs in (
                {"attempt_count": 2**31},
                {"attempt_count": "1"},
                {"v_total": float("inf")},
                {"children": "a"},
                {"goal": "\\ud800"},
            ):
                try:
                    ps.NodeStateRecord(node_id="n", session_id="s", state="x", **kwargs)
                except pydantic.ValidationError:
                    continue
                bad.append(kwargs)
            row = ps.NodeStateRecord(
                node_id="n", session_id="s", state="x", attempt_count=3, children=("a",)
            )
            return bad, row.children, row.attempt_count

        print(first_use())
        """
    )
    assert out.strip() == "([], ['a'], 3)"


def test_threads_building_the_same_deferred_model_at_once() -> None:
    """Sixteen threads released together each validate rows of one unbuilt model: every
    valid row is built and equal, every invalid one is a ValidationError."""
    out = _run(
        """
        import threading
        import pydantic
        import perspt_store as ps

        models = [ps.EnergyRecord, ps.SessionRecord, ps.NodeStateRecord]
        assert not any(m.__pydantic_complete__ for m in models)
        barrier = threading.Barrier(16)
        results, failures = [], []

        def work(i):
            barrier.wait()
            try:
                good = [
                    ps.EnergyRecord(node_id=f"n{i}", session_id="s", v_total=0.5),
                    ps.SessionRecord.model_validate(
                        {"session_id": "s", "task": "t", "working_dir": "/w"}
                    ),
                    ps.NodeStateRecord(node_id="n", session_id="s", state="x"),
                ]
                for bad in ({"v_total": "1"}, {"v_total": float("nan")}):
                    try:
                        ps.EnergyRecord(node_id="n", session_id="s", **bad)
                    except pydantic.ValidationError:
                        continue
                    failures.append(("accepted", bad))
                results.append((good[0].v_total, good[1], good[2]))
            except BaseException as exc:
                failures.append(repr(exc))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        same = all(r[1:] == results[0][1:] for r in results)
        print(len(results), failures, same, all(m.__pydantic_complete__ for m in models))
        """
    )
    assert out.split(maxsplit=1)[0] == "16"
    assert out.strip() == "16 [] True True"


def test_a_deferred_model_round_trips_through_the_store(tmp_path: object) -> None:
    out = _run(
        f"""
        import perspt_store as ps
        with ps.SessionStore.open({str(tmp_path)!r} + "/s.db") as store:
            store.create_session(ps.SessionRecord(session_id="s", task="t", working_dir="/w"))
            store.record_energy(ps.EnergyRecord(node_id="n", session_id="s", v_total=1.5))
            got = store.get_session("s")
            print(got.task, store.get_energy_history("s", "n")[0].v_total)
        """
    )
    assert out.split() == ["t", "1.5"]
    # A fresh process whose first use of the node models is the bulk snapshot reader
    # (it builds one validator from a model's core schema).
    out = _run(
        f"""
        import perspt_store as ps
        path = {str(tmp_path)!r} + "/s.db"
        with ps.SessionStore.open(path) as store:
            store.record_node_state(
                ps.NodeStateRecord(node_id="n", session_id="s", state="Done", children=["c"])
            )
        with ps.SessionStore.open_read_only(path) as store:
            snap = store.load_session_snapshot("s")
            detail = snap.node("n")
            print(detail.record.children, [e.v_total for e in detail.energy_history])
        """
    )
    assert out.strip() == "['c'] [1.5]"


def test_validation_error_is_pydantics() -> None:
    with pytest.raises(pydantic.ValidationError):
        ps.EnergyRecord(node_id="n", session_id="s", v_total="1")  # type: ignore[arg-type]


def test_argument_checks_resolve_for_every_public_method() -> None:
    """The checks are built on each method's first call; building them all at once must
    work (every annotation resolves), as it did when they were built at import."""
    from perspt_store.store._arguments import build_checks

    build_checks(ps.SessionStore)
    for name in dir(ps.SessionStore):
        assert not hasattr(getattr(ps.SessionStore, name), "__perspt_build__"), name


def test_the_first_call_of_a_method_checks_its_arguments() -> None:
    out = _run(
        """
        import threading
        import perspt_store as ps
        store = ps.SessionStore.in_memory()
        shim = ps.SessionStore.__dict__["get_session"]
        errors = []
        barrier = threading.Barrier(8)

        def call():
            barrier.wait()
            try:
                store.get_session(123)
            except TypeError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(errors), len(set(errors)), ps.SessionStore.__dict__["get_session"] is not shim)
        print(errors[0])
        print(store.get_session("absent"))
        """
    )
    assert out.splitlines() == [
        "8 1 True",
        "get_session() argument 'session_id' must be str, not int",
        "None",
    ]
