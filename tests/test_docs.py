"""The README and docs/ pages: links resolve, nothing cites files outside the
repository, and the README stays short with its figures taken from docs/results.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: [text](target) outside code spans; images too (![alt](target)).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: Files that live outside the repository (notes the project was written from).
OUTSIDE = re.compile(r"METHODS\.md|papers/|shared/|DESIGN\.md|FLOWER-NOTES")
#: A quoted figure: "97.8 ± 0.2", "-11.24 ± 7.47".
FIGURE = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)? ± \d[\d,]*(?:\.\d+)?")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (whose brackets are
    code, not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def heading_anchors(page: Path) -> set[str]:
    """Anchors of the page's headings, code spans kept as their text (as GitHub)."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif not dest.resolve().is_relative_to(ROOT.resolve()):
            broken.append(f"{target} (outside the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_page_cites_files_outside_the_repository(page: Path) -> None:
    hits = [
        f"{n}: {line.strip()[:80]}"
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not hits, f"{page.relative_to(ROOT)} cites files not in the repository"


def test_readme_is_short_and_quotes_its_figures_from_the_results_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    results = (ROOT / "docs" / "results.md").read_text()
    missing = [f for f in FIGURE.findall(readme) if f not in results]
    assert not missing, f"README figures not in docs/results.md: {missing}"
    # the two commands of a fresh machine
    assert "bash deploy/quickstart.sh" in readme and "bash deploy/test.sh" in readme
    for name in ("quickstart.sh", "test.sh", "setup.sh"):
        assert (ROOT / "deploy" / name).exists(), name
