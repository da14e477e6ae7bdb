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

Row modules (``sdanatomy.ledger.<section>``) register their rows with the :func:`row` decorator
at import time; :mod:`sdanatomy.ledger` imports the explicit list of them and answers queries
(``entries``, ``table``, ``where``). :class:`Table` is the book's one table class.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

VERDICTS = ("matches", "differs")

_REGISTRY: dict[str, "Entry"] = {}


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

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}; got {self.verdict!r} in {self.name!r}")
        if self.verdict == "differs" and not (self.corrected_by and self.note):
            raise ValueError(f"a 'differs' entry names its corrected twin and says why: {self.name!r}")
        if not self.tol >= 0:
            raise ValueError(f"tolerance must be >= 0; got {self.tol!r} in {self.name!r}")

    def run(self, seed: int = 0, dtype: torch.dtype = torch.float64) -> "Result":
        err = float(self.measure(seed=seed, dtype=dtype))
        ok = err <= self.tol if self.verdict == "matches" else err > self.tol
        return Result(self, err, ok)


@dataclass(frozen=True)
class Result:
    entry: Entry
    err: float
    ok: bool


def row(name: str, *, section: str, formula: str, reference: str, tol: float, why_tol: str,
        verdict: str = "matches", corrected_by: str | None = None, note: str = "",
        error: str = "max abs", checks: tuple[str, ...] = ()) -> Callable:
    """Register the decorated ``measure(seed, dtype) -> float`` as a ledger row."""

    def register(measure: Callable[..., float]) -> Callable[..., float]:
        entry = Entry(name, section, formula, reference, measure, tol, why_tol, verdict,
                      corrected_by, note, error, tuple(checks))
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
    """The rows of a ledger section, measured: shows as HTML in a notebook, as text elsewhere."""

    def __init__(self, results: list[Result], title: str):
        self.results = results
        self.title = title

    @property
    def all_ok(self) -> bool:
        return all(r.ok for r in self.results)

    def summary(self) -> str:
        n = len(self.results)
        m = sum(r.entry.verdict == "matches" for r in self.results)
        ok = sum(r.ok for r in self.results)
        return f"{self.title}: {n} rows, {m} matches, {n - m} differs; {ok}/{n} checks hold"

    def _cells(self, r: Result) -> list[str]:
        e = r.entry
        verdict = e.verdict + ("" if e.corrected_by is None else f" → {e.corrected_by}")
        mark = "✓" if r.ok else "✗ FAILED"
        cmp = "≤" if e.verdict == "matches" else ">"
        return [e.section, e.name, e.reference, f"{format_error(r.err)} {cmp} {format_error(e.tol)}",
                f"{verdict} {mark}"]

    def __repr__(self) -> str:
        head = ["§", "lecture", "checked against", "error vs tol", "verdict"]
        rows = [head] + [self._cells(r) for r in self.results]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + [self.summary()])

    def _repr_html_(self) -> str:
        # "mathjax_process" lets MathJax typeset the formulas inside a notebook's HTML output.
        head = "".join(f"<th>{h}</th>" for h in ("§", "lecture", "checked against", "error vs tolerance", "verdict"))
        body = []
        for r in self.results:
            e = r.entry
            verdict = html.escape(e.verdict) + ("" if e.corrected_by is None else
                                                f" → {html.escape(e.corrected_by)}")
            mark = "✓" if r.ok else "✗ FAILED"
            cmp = "≤" if e.verdict == "matches" else "&gt;"
            note = f"<br><small>{html.escape(e.note)}</small>" if e.note else ""
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
                html.escape(e.section),
                f"{html.escape(e.name)}<br><small>\\({html.escape(e.formula)}\\)</small>",
                html.escape(e.reference),
                f"{format_error(r.err)} {cmp} {format_error(e.tol)}<br>"
                f"<small>error: {html.escape(e.error)}; tolerance: {html.escape(e.why_tol)}</small>",
                f"{verdict} {mark}{note}",
            )) + "</tr>")
        return (f'<div class="ledger mathjax_process"><table class="ledger">'
                f"<caption>{html.escape(self.summary())}</caption>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
