"""The functions the book shows beside their definitions fit the page.

A chapter shows a function of ``sdanatomy.lecture`` with a MyST ``literalinclude`` and
``:pyobject:``, read from the package when the book is built. Each listing must exist
(the file, and the function in it) and read well in the column: at most MAX_LINES lines,
none longer than MAX_WIDTH characters, so that nothing scrolls sideways. tests/browser
checks the rendered page; this checks the source, without a build.
"""
import ast
import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
MAX_LINES = 40
MAX_WIDTH = 88
LISTING = re.compile(r"```\{literalinclude\}\s+(\S+)\n((?::[\w-]+:.*\n)*)```")


def listings():
    """(notebook, path as written, object) for every literalinclude with :pyobject:."""
    found = []
    for nb_path in sorted(BOOK.glob("*.ipynb")):
        for cell in nbformat.read(nb_path, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            for path, options in LISTING.findall(cell.source + "\n"):
                obj = re.search(r"^:pyobject:\s*(\S+)", options, re.M)
                if obj:
                    found.append((nb_path.name, path, obj.group(1)))
    return found


def source_of(file: Path, dotted: str) -> list[str]:
    """The lines Sphinx's :pyobject: shows: the definition, decorators included."""
    text = file.read_text()
    body = ast.parse(text).body
    node = None
    for name in dotted.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                     and n.name == name), None)
        assert node is not None, f"{file.relative_to(REPO)} has no {dotted}"
        body = node.body
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return text.splitlines()[start - 1:node.end_lineno]


def test_the_chapters_show_functions():
    shown = {(nb, obj) for nb, _, obj in listings()}
    for nb, obj in [("ch02_notation.ipynb", "flatten_literal"),
                    ("ch03_freedom.ipynb", "noise_estimation_loss"),
                    ("ch04_variable_sizes.ipynb", "conv2d_literal")]:
        assert (nb, obj) in shown, f"{nb} no longer shows {obj}"


@pytest.mark.parametrize("notebook, path, obj", listings(), ids=lambda v: str(v))
def test_listing_fits_the_page(notebook, path, obj):
    file = (BOOK / path).resolve()
    assert file.is_file(), f"{notebook}: literalinclude {path} names no file"
    lines = source_of(file, obj)
    assert len(lines) <= MAX_LINES, (f"{notebook} shows {obj} ({len(lines)} lines > "
                                     f"{MAX_LINES}): shorten it, or show a helper")
    wide = [f"{len(line)}: {line}" for line in lines if len(line) > MAX_WIDTH]
    assert not wide, (f"{notebook} shows {obj} with lines over {MAX_WIDTH} "
                      f"characters:\n" + "\n".join(wide))
