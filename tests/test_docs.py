"""The docs cannot rot: their examples run, the generated pages match the code, every public
name has a reference entry, and the site builds with ``mkdocs build --strict``.

Code blocks: every fenced ``python`` block in ``README.md`` and ``docs/**/*.md`` runs, in a
temporary working directory, each file's blocks in order and sharing one namespace (so a page
reads as one script). Two HTML comments on the line before a fence change that:

* ``<!-- skip -->``: the block is not run (keep these rare, and say why in the text);
* ``<!-- pytest -->``: the block is a test module; it is written to a file and run by pytest in
  a subprocess, with perspt-store's pytest plugin loaded as it is for users.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import perspt_store as ps

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
API_PAGES = [*sorted((DOCS / "api").glob("*.md")), DOCS / "errors.md"]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_MARKERS = {"<!-- skip -->": "skip", "<!-- pytest -->": "pytest"}


@dataclass(frozen=True)
class CodeBlock:
    path: Path
    line: int
    """1-based line of the block's first code line in ``path``."""
    code: str
    mode: str
    """``run``, ``pytest`` or ``skip``."""


def code_blocks(path: Path) -> list[CodeBlock]:
    """The fenced ``python`` blocks of a Markdown file, in order (indented fences included)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = (match["info"].split() or [""])[0].lower()
        previous = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and lines[end].strip().strip(fence[0]) == ""
        ):
            end += 1
        if language in ("python", "py"):
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : end]]
            blocks.append(
                CodeBlock(path, i + 2, "\n".join(body) + "\n", _MARKERS.get(previous, "run"))
            )
        i = end + 1
    return blocks


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


PAGES_WITH_CODE = [path for path in MARKDOWN if code_blocks(path)]


def test_every_guide_and_api_page_has_a_runnable_example() -> None:
    pages = [ROOT / "README.md", *(DOCS / name for name in (
        "index.md", "quickstart.md", "concepts.md", "testing.md", "migrating.md", "errors.md"
    )), *sorted((DOCS / "api").glob("*.md"))]
    without = [_rel(p) for p in pages if not any(b.mode != "skip" for b in code_blocks(p))]
    assert not without, f"pages without a runnable python example: {without}"


def test_few_examples_are_skipped() -> None:
    blocks = [block for path in MARKDOWN for block in code_blocks(path)]
    skipped = [f"{_rel(b.path)}:{b.line}" for b in blocks if b.mode == "skip"]
    assert len(skipped) <= 3, f"too many skipped examples: {skipped}"


@pytest.mark.parametrize("path", PAGES_WITH_CODE, ids=_rel)
def test_python_examples_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # Keep any store an example opens with default settings away from the real data dir.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    namespace: dict[str, object] = {"__name__": "__docs__"}
    test_modules: list[tuple[CodeBlock, Path]] = []
    for n, block in enumerate(code_blocks(path)):
        if block.mode == "skip":
            continue
        if block.mode == "pytest":
            module = tmp_path / f"test_example_{n}.py"
            module.write_text(block.code, encoding="utf-8")
            test_modules.append((block, module))
            continue
        # Pad with blank lines so a traceback names the Markdown file's own line numbers.
        code = compile("\n" * (block.line - 1) + block.code, _rel(path), "exec")
        exec(code, namespace)
    if test_modules:
        _run_pytest(test_modules, tmp_path)


def _run_pytest(test_modules: list[tuple[CodeBlock, Path]], cwd: Path) -> None:
    """Run the page's test-module examples in one pytest subprocess (plugins autoloaded)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(str(module) for _, module in test_modules)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    where = ", ".join(f"{_rel(block.path)}:{block.line}" for block, _ in test_modules)
    assert result.returncode == 0, (
        f"the pytest examples at {where} failed:\n{result.stdout}\n{result.stderr}"
    )
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and "failed" not in result.stdout, result.stdout


# --- generated pages ---------------------------------------------------------------------


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schema", DOCS / "gen_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schema_page_matches_the_row_models_and_the_schema() -> None:
    expected = _load_generator().render()
    actual = (DOCS / "schema.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/schema.md is out of date: run python docs/gen_schema.py"


def test_schema_page_documents_every_table_and_column() -> None:
    text = (DOCS / "schema.md").read_text(encoding="utf-8")
    for table, model in ps.ROW_MODELS.items():
        assert f"### `{table}`" in text
        for column in (*model.model_fields, *model.__db_columns__):
            row = re.search(rf"^\| `{column}` \|.*\| (?P<doc>[^|]*) \|$", text, re.MULTILINE)
            assert row is not None and row["doc"].strip(), (table, column)


# --- reference completeness --------------------------------------------------------------


def _directives() -> set[str]:
    """Every object rendered by a ``::: name`` directive on the API pages."""
    found: set[str] = set()
    for page in API_PAGES:
        found.update(re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.M))
    return found


def test_every_public_name_has_a_reference_entry() -> None:
    rendered = _directives()
    missing = [
        name
        for name in ps.__all__
        if name != "__version__" and f"perspt_store.{name}" not in rendered
    ]
    assert not missing, f"add a '::: perspt_store.<name>' entry to docs/api/ for {missing}"
    text = "\n".join(page.read_text(encoding="utf-8") for page in API_PAGES)
    assert "perspt_store.__version__" in text


def test_every_public_store_method_has_a_reference_entry() -> None:
    rendered = _directives()
    public = sorted(name for name in dir(ps.SessionStore) if not name.startswith("_"))
    missing = [name for name in public if f"perspt_store.SessionStore.{name}" not in rendered]
    assert not missing, f"add '::: perspt_store.SessionStore.<name>' to docs/api/ for {missing}"


def test_reference_entries_name_real_objects() -> None:
    with ps.SessionStore.in_memory() as store:  # for attributes set in __init__
        for dotted in sorted(_directives()):
            module_name, _, rest = dotted.partition(".")
            obj: object = importlib.import_module(module_name)
            for part in rest.split("."):
                if isinstance(obj, ModuleType) and not hasattr(obj, part):
                    obj = importlib.import_module(f"{obj.__name__}.{part}")
                elif obj is ps.SessionStore and not hasattr(obj, part):
                    obj = getattr(store, part)
                else:
                    obj = getattr(obj, part)


# --- the site ----------------------------------------------------------------------------

_DOCS_EXTRA = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")


def test_site_builds_strictly(tmp_path: Path) -> None:
    missing = [name for name in _DOCS_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)} missing): "
                    "pip install -e '.[docs]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    assert (tmp_path / "site" / "api" / "sessions" / "index.html").exists()
