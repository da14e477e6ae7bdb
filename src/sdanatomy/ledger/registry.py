"""The equation ledger: every formula of the lecture, executed and checked.

Each :class:`Entry` names one equation or definition of the lecture, the reference it is
checked against (a torch function, a diffusers module, a closed form), a tolerance with
the reason for it, and a ``measure`` function that returns the error actually observed.
Its verdict says what we expect to find:

* ``"matches"`` — the lecture's formula, implemented literally, reproduces the reference:
  the check passes when ``error <= tol``;
* ``"differs"`` — it does not: the check passes when ``error > tol``, i.e. the difference
  is real and reproducible, and the entry names its corrected twin (``corrected_by``),
  itself a ``"matches"`` entry.

A "differs" row could pass with a printed reading implemented wrongly: any error above the
tolerance would do. So every "differs" row carries a :class:`Route`, a second, independent
computation of the same printed reading (the literal loop beside the vectorised form, diffusers'
own modules called in the printed order, a closed form for a count or a size), which must agree
with the package's printed function to round-off (``atol`` and ``rtol``, with the reason). The row
holds only when the difference is real *and* the printed reading is computed right. A "differs"
row without a route is refused at registration.

Row modules (``sdanatomy.ledger.<section>``) register their rows with the :func:`row` decorator
at import time; :mod:`sdanatomy.ledger` imports the explicit list of them and answers queries
(``entries``, ``table``, ``where``). :class:`Table` is the book's one table class.
"""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

VERDICTS = ("matches", "differs")

_REGISTRY: dict[str, "Entry"] = {}


@dataclass(frozen=True)
class Route:
    """The second route of a "differs" row: its printed reading computed twice.

    ``compute(seed=0, dtype=torch.float64)`` returns ``(printed, independent)``: what the
    package's printed function gives, and what an independent route gives for the same printed
    reading. Numbers and tensors agree when ``|printed − independent| ≤ atol + rtol·|independent|``
    everywhere (and the shapes agree); anything else (strings, tuples of kinds) must be equal.
    """

    compute: Callable[..., tuple[Any, Any]]
    how: str                       # the independent route, in words
    atol: float
    rtol: float
    why: str                       # why these tolerances hold

    def __post_init__(self):
        if not (self.atol >= 0 and self.rtol >= 0):
            raise ValueError(f"a route's atol and rtol must be >= 0; got {self.atol!r}, {self.rtol!r}")
        if not (self.how.strip() and self.why.strip()):
            raise ValueError("a route says what it computes (how) and why its tolerances hold (why)")

    def check(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[float, bool]:
        """(max |printed − independent|, whether they agree within atol and rtol)."""
        printed, independent = self.compute(seed=seed, dtype=dtype)
        return agreement(printed, independent, atol=self.atol, rtol=self.rtol)


def _as_tensor(x) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return torch.tensor(float(x), dtype=torch.float64)
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in x):
        return torch.tensor([float(v) for v in x], dtype=torch.float64)
    return None


def agreement(a, b, *, atol: float, rtol: float) -> tuple[float, bool]:
    """(max |a − b|, a agrees with b within atol + rtol·|b|): for numbers, tensors, lists of
    numbers; other values (lists of strings) must be equal (0 or ∞)."""
    ta, tb = _as_tensor(a), _as_tensor(b)
    if ta is None or tb is None:
        return (0.0, True) if a == b else (math.inf, False)
    if ta.shape != tb.shape:
        return math.inf, False
    if ta.numel() == 0:
        return 0.0, True
    if not (torch.isfinite(ta).all() and torch.isfinite(tb).all()):
        same = bool(torch.equal(ta, tb))
        return (0.0 if same else math.inf), same
    diff = (ta - tb).abs()
    return diff.max().item(), bool((diff <= atol + rtol * tb.abs()).all())


@dataclass(frozen=True)
class Entry:
    """One row of the ledger: a lecture formula, its reference, and how close they are."""

    name: str                      # "(2) inner product": the lecture's number, then words
    section: str                   # the lecture's section, "2", "6.1", "6.8.1"
    formula: str                   # what is checked, in the lecture's notation (LaTeX)
    reference: str                 # what it is checked against
    measure: Callable[..., float]  # measure(seed=0, dtype=torch.float64) -> error
    tol: float                     # the check: error <= tol ("matches") or > tol ("differs")
    why_tol: str                   # why this tolerance
    verdict: str = "matches"
    corrected_by: str | None = None  # for "differs": the name of the matching twin
    note: str = ""                 # what SD-1.5 really does, where the lecture differs
    error: str = field(default="max abs", compare=False)  # how measure() reports the error
    # The lecture functions the row checks, where its measure() does not call them itself (a row
    # on a printed structure reads diffusers' modules); ledger.where() adds the ones it calls.
    checks: tuple[str, ...] = field(default=(), compare=False)
    # For "differs": the printed reading computed by a second, independent route (required).
    route: Route | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}; got {self.verdict!r} in {self.name!r}")
        if self.verdict == "differs" and not (self.corrected_by and self.note):
            raise ValueError(f"a 'differs' entry names its corrected twin and says why: {self.name!r}")
        if not self.tol >= 0:
            raise ValueError(f"tolerance must be >= 0; got {self.tol!r} in {self.name!r}")
        if self.verdict == "differs" and not isinstance(self.route, Route):
            raise ValueError(f"a 'differs' entry computes its printed reading by a second route "
                             f"(route=Route(...)): {self.name!r}")
        if self.route is not None and self.verdict != "differs":
            raise ValueError(f"only a 'differs' entry has a second route: {self.name!r}")

    def run(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> "Result":
        err = float(self.measure(seed=seed, dtype=dtype))
        if self.verdict == "matches":
            return Result(self, err, err <= self.tol)
        route_err, route_ok = self.route.check(seed=seed, dtype=dtype)
        return Result(self, err, err > self.tol and route_ok, route_err, route_ok)


@dataclass(frozen=True)
class Result:
    entry: Entry
    err: float
    ok: bool
    # "differs" rows: max |printed − independent| of the second route, and whether it agrees.
    route_err: float | None = None
    route_ok: bool | None = None


def row(name: str, *, section: str, formula: str, reference: str, tol: float, why_tol: str,
        verdict: str = "matches", corrected_by: str | None = None, note: str = "",
        error: str = "max abs", checks: tuple[str, ...] = (), route: Route | None = None) -> Callable:
    """Register the decorated ``measure(seed, dtype) -> float`` as a ledger row (a "differs"
    row with its :class:`Route`)."""

    def register(measure: Callable[..., float]) -> Callable[..., float]:
        entry = Entry(name, section, formula, reference, measure, tol, why_tol, verdict,
                      corrected_by, note, error, tuple(checks), route)
        if name in _REGISTRY and _REGISTRY[name].measure.__qualname__ != measure.__qualname__:
            raise ValueError(f"two ledger rows are named {name!r}")
        _REGISTRY[name] = entry
        return measure

    return register


def _section_key(section: str) -> tuple[int, ...]:
    return tuple(int(p) for p in section.split("."))


def _equation_key(name: str) -> int:
    """The last equation number of the name's leading "(25)–(26)": rows sort after what they cover."""
    m = re.match(r"\(\d+\)(?:[–-]\(\d+\))?", name)
    return max(int(n) for n in re.findall(r"\d+", m.group(0))) if m else 0


def format_error(err: float) -> str:
    """Errors are shown to one significant digit: exact zeros as 0."""
    return "0" if err == 0 else f"{err:.0e}"


class Table:
    """The book's one table: a title, a header and rows of cells; HTML in a notebook (the ledger's
    look, book/_static/sdanatomy.css), aligned text elsewhere.

    ``rows`` are the text cells; ``html_rows`` (optional) the same cells as HTML markup, already
    escaped by the caller (LaTeX for MathJax, ``<small>`` notes); without them the text cells are
    escaped. Columns of integers are right-aligned. ``ok`` says, for a table of checks, whether
    every check holds (None for a table of facts); ``notes`` are lines printed under it.
    """

    def __init__(self, title: str, header, rows, *, notes=(), html_rows=None, ok: bool | None = None,
                 css: str = ""):
        self.title, self.header, self.notes, self.ok = str(title), [str(h) for h in header], list(notes), ok
        self.css = css          # an extra class of the HTML table (the book's stylesheet may size it)
        self.rows = [[str(c) for c in r] for r in rows]
        if any(len(r) != len(self.header) for r in self.rows):
            raise ValueError(f"every row of {self.title!r} has {len(self.header)} cells")
        self.html_rows = ([[html.escape(c) for c in r] for r in self.rows] if html_rows is None
                          else [[str(c) for c in r] for r in html_rows])

    @property
    def all_ok(self) -> bool:
        """For a table of checks: every check holds."""
        if self.ok is None:
            raise TypeError(f"{self.title!r} is a table of facts, not of checks")
        return self.ok

    def _numeric(self) -> list[bool]:
        return [bool(self.rows) and all(re.fullmatch(r"[\d,]+", r[i]) for r in self.rows)
                for i in range(len(self.header))]

    def __repr__(self) -> str:
        rows, numeric = [self.header] + self.rows, self._numeric()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.header))]

        def line(r):
            return "  ".join(c.rjust(w) if num else c.ljust(w)
                             for c, w, num in zip(r, widths, numeric)).rstrip()
        lines = [self.title, line(self.header), "  ".join("-" * w for w in widths)]
        return "\n".join(lines + [line(r) for r in self.rows] + self.notes)

    def _repr_html_(self) -> str:
        # "mathjax_process" lets MathJax typeset the \( \) cells inside a notebook's HTML output.
        def cell(c, num):
            if re.fullmatch(r"[\w.]{12,}", c) and "." in c:   # a module path may break after a dot
                c = c.replace(".", ".<wbr>")
            return f'<td style="text-align: right">{c}</td>' if num else f"<td>{c}</td>"
        numeric = self._numeric()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(cell(c, num) for c, num in zip(r, numeric)) + "</tr>"
                       for r in self.html_rows)
        notes = "".join(f"<p><small>{html.escape(n)}</small></p>" for n in self.notes)
        return (f'<div class="ledger sdanatomy-table mathjax_process"><table class="{html.escape(("ledger " + self.css).strip())}">'
                f"<caption>{html.escape(self.title)}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{notes}</div>")
