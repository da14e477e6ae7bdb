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


# ---------------------------------------------------------------- pictures and experiments (#14)
RUN_IT = re.compile(r":::\{exercise\} Predict, then run\s*\n:label: (\S+)")
SLIDER = re.compile(r"\binteract(?:ive)?\(")
MIN_FIGURES = 2
MIN_SLIDER_CHAPTERS = 3


def figures(nb) -> list[str]:
    """Names of the captioned figures a notebook computes: code cells whose stored output is an
    image (or an animation's HTML) and whose metadata gives MyST-NB a caption and a name."""
    found = []
    for cell in nb.cells:
        fig = cell.metadata.get("mystnb", {}).get("figure", {})
        shown = any({"image/png", "image/svg+xml", "text/html"} & set(o.get("data", {}))
                    for o in cell.get("outputs", []))
        if cell.cell_type == "code" and fig.get("caption") and fig.get("name") and shown:
            found.append(fig["name"])
    return found


def run_it_exercises(nb) -> list[str]:
    """Labels of the 'Predict, then run' exercises whose gated solution runs code: the
    solution-start names the exercise, and a code cell with output precedes solution-end."""
    labels, open_label, ran = [], None, False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for label in RUN_IT.findall(cell.source):
                labels.append(label)
            start = re.search(r"\{solution-start\} (\S+)", cell.source)
            if start:
                open_label, ran = start.group(1), False
            if "{solution-end}" in cell.source and open_label:
                if ran and open_label in labels:
                    yield open_label
                open_label = None
        elif open_label and cell.get("outputs"):
            ran = True


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_computes_captioned_figures(chapter):
    names = figures(nbformat.read(REPO / f"{chapter}.ipynb", 4))
    assert len(names) >= MIN_FIGURES, f"{chapter}: captioned computed figures {names}"
    assert all(n.startswith("fig-") for n in names), names


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_chapter_has_a_run_it_exercise_with_an_executed_answer(chapter):
    done = list(run_it_exercises(nbformat.read(REPO / f"{chapter}.ipynb", 4)))
    assert done, f"{chapter}: no 'Predict, then run' exercise with an executed solution"


def test_sliders_in_three_chapters_hidden_on_the_site():
    with_slider = []
    for chapter in CHAPTERS:
        cells = [c for c in nbformat.read(REPO / f"{chapter}.ipynb", 4).cells
                 if c.cell_type == "code" and SLIDER.search(c.source)]
        for c in cells:
            tags = c.metadata.get("tags", [])
            # a slider needs a kernel: the site shows the static figure beside it instead
            assert "remove-output" in tags, (chapter, c.source[:80])
            # under nbval the slider's first drawing arrives as ordinary outputs, under nbclient
            # (make execute) inside the widget: the two runs store different outputs
            assert "nbval-ignore-output" in tags, (chapter, c.source[:80])
        if cells:
            with_slider.append(chapter)
    assert len(with_slider) >= MIN_SLIDER_CHAPTERS, with_slider


@pytest.mark.parametrize("notebook", sorted((REPO / "book").glob("*.ipynb")), ids=lambda p: p.name)
def test_no_notebook_stores_widget_state(notebook):
    # with it, MyST-NB would load the widget manager from a CDN: the site is offline
    assert "widgets" not in nbformat.read(notebook, 4).metadata


def test_the_structure_finders_see_what_they_should(tmp_path):
    v4 = nbformat.v4
    fig_cell = v4.new_code_cell("fig", metadata={"mystnb": {"figure": {
        "caption": "Look.", "name": "fig-x"}}})
    fig_cell.outputs = [v4.new_output("display_data", data={"image/png": "AA=="})]
    bare = v4.new_code_cell("fig")
    bare.outputs = list(fig_cell.outputs)                     # an image without a caption
    ran = v4.new_code_cell("print(9)")
    ran.outputs = [v4.new_output("stream", text="9\n")]
    nb = v4.new_notebook(cells=[
        fig_cell, bare,
        v4.new_markdown_cell(":::{exercise} Predict, then run\n:label: ex-a\n\nx\n:::\n\n"
                             "```{solution-start} ex-a\n:class: dropdown\n```"),
        ran, v4.new_markdown_cell("```{solution-end}\n```"),
        v4.new_markdown_cell(":::{exercise} Predict, then run\n:label: ex-b\n\ny\n:::\n\n"
                             "```{solution-start} ex-b\n```"),
        v4.new_code_cell("print(1)"), v4.new_markdown_cell("```{solution-end}\n```")])
    assert figures(nb) == ["fig-x"]
    assert list(run_it_exercises(nb)) == ["ex-a"]           # ex-b's answer never ran
