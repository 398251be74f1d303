"""The documentation is true: its Python examples run, and it cites nothing outside the repository.

Every ```python block of README.md and docs/**/*.md runs, each page's blocks in order in one namespace,
in a temporary directory. A block preceded by the line `<!-- docs-test: skip (reason) -->` is left out
on purpose; say why in the comment. Shell commands go in ```bash blocks, which are not run here (the
command line has its own tests).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^(?P<skip><!-- docs-test: skip[^\n]*-->\n)?```python\n(?P<code>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
NESTED = re.compile(r"^[ \t>]+```python", re.MULTILINE)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(first line number, code) of each ```python block of `page` that is not marked to be skipped."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start("code")), match["code"]) for match in BLOCK.finditer(text) if not match["skip"]]


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


def test_examples_are_found() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES_WITH_CODE}
    assert {"README.md", "docs/index.md", "docs/getting-started/trigger-physicist.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_no_python_block_hides_from_the_runner(page: Path) -> None:
    """Indented or quoted ```python blocks would silently not run: keep every example at the top level."""
    assert not NESTED.search(page.read_text(encoding="utf-8")), f"{page.name}: move the indented ```python block to the top level"


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for line, code in python_blocks(page):
        # Leading newlines make tracebacks point at the line of the page itself.
        exec(compile("\n" * line + code, str(page), "exec"), namespace)


def test_every_docs_page_the_sources_name_exists() -> None:
    """Docstrings and error messages send readers to docs/...md pages: each of them must exist."""
    named = {match for path in (ROOT / "src").rglob("*.py") for match in re.findall(r"docs/[\w./-]+\.md", path.read_text(encoding="utf-8"))}
    assert named, "the sources name no docs page"
    missing = sorted(name for name in named if not (ROOT / name).is_file())
    assert not missing, f"pages named in src/ but absent: {missing}"


# Patterns are assembled from parts so that this file does not match itself.
OUTSIDE_REFERENCES = re.compile(
    "|".join(
        [
            r"\b" + "FORMULAS" + r"\.md",
            r"\b" + "DESIGN" + r"\.md",
            r"\.\./" + "shared",
            r"/work/" + "shared",
            "shared" + "/papers",
            r"\b(?:paper|thesis|notes|blog|seed)[ _-]?" + r"0\d\d\b",
        ]
    ),
    re.IGNORECASE,
)
SCANNED = ("src", "docs", "examples", "benchmarks", "tests")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".yml", ".yaml", ".cfg", ".js", ".csv", ""}


def scanned_files() -> list[Path]:
    files = [path for path in ROOT.iterdir() if path.is_file() and path.suffix in TEXT_SUFFIXES]
    for folder in SCANNED:
        files += [path for path in (ROOT / folder).rglob("*") if path.is_file() and path.suffix in TEXT_SUFFIXES]
    return [path for path in files if "__pycache__" not in path.parts]


def test_no_reference_to_material_outside_the_repository() -> None:
    """Users cannot resolve notes that are not in the repository or internal ids: cite the paper instead."""
    found = []
    for path in scanned_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE_REFERENCES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "references to material outside the repository:\n" + "\n".join(found)


def test_the_reference_scan_catches_what_it_must() -> None:
    md, zero = ".md", "0"
    for text in (
        "see FORMULAS" + md,
        "DESIGN" + md + ", section 2",
        "../" + "shared/notes",
        f"(paper {zero}00, Eq. 2.3)",
        f"thesis {zero}03",
        f"blog_{zero}02",
    ):
        assert OUTSIDE_REFERENCES.search(text), text
    for text in ("Kitouni, Nolte and Williams 2023, Eq. 2.3", "noise seed 0", "docs/reference/norms.md"):
        assert not OUTSIDE_REFERENCES.search(text), text
