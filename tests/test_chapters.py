"""The chapters as a reader meets them: each ends with a summary that links to what it
established, and the book closes with a chapter that maps the learning outcomes.

Read from the notebooks and _toc.yml, without a build (tests/browser checks the site).
"""
import re
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TOC = yaml.safe_load((REPO / "_toc.yml").read_text())
CHAPTERS = [c["file"] for part in TOC["parts"] if part["caption"] == "The lecture"
            for c in part["chapters"]]
LINK = re.compile(r"\{(?:prf:ref|ref|numref|eq|doc)\}`[^`]+`")


def summary(path: Path) -> str:
    """The markdown of a notebook's '## Summary' section, up to the next heading of its level."""
    text = "\n".join(c.source for c in nbformat.read(path, 4).cells
                     if c.cell_type == "markdown")
    m = re.search(r"^## Summary\s*$(.*?)(?=^#{1,2} |\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_ends_with_a_linked_summary(chapter):
    body = summary(REPO / f"{chapter}.ipynb")
    assert body, f"{chapter} has no '## Summary' section"
    points = [p for p in re.split(r"^[-*] ", body, flags=re.M)[1:] if p.strip()]
    assert len(points) >= 3, f"{chapter}: a summary of {len(points)} points"
    unlinked = [p.split("\n")[0][:60] for p in points if not LINK.search(p)]
    assert not unlinked, f"{chapter}: summary points without a link: {unlinked}"


def test_the_closing_chapter_is_last_and_maps_the_learning_outcomes():
    assert CHAPTERS[-1] == "book/ch09_closing"
    text = "\n".join(c.source for c in nbformat.read(REPO / "book/ch09_closing.ipynb", 4).cells)
    for outcome in ("Describe the networks", "accept inputs of any size",
                    "differ from their original proposals", "the text encoder"):
        assert outcome in text, outcome


def test_the_summary_finder_stops_at_the_next_section(tmp_path):
    cells = ["# A\n\n## Notes\n- x", "## Summary\n\n- one {ref}`a`\n\n## Ledger\n- not it"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(c) for c in cells])
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert summary(tmp_path / "x.ipynb").split() == ["-", "one", "{ref}`a`"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(cells[0])]),
                   tmp_path / "y.ipynb")
    assert summary(tmp_path / "y.ipynb") == ""
