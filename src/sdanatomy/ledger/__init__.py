"""The equation ledger: every formula of the lecture, executed and checked.

The rows live in one module a lecture section (:data:`ROW_MODULES`, imported below, explicitly and
in lecture order: a module that fails to import fails loudly); :mod:`.registry` holds the
:class:`~sdanatomy.ledger.registry.Entry` type and the ``@row`` decorator they register with.
This module answers the queries: :func:`entries`, :func:`get`, :func:`table`, :func:`where`.
"""
from __future__ import annotations

import html
import inspect
import re
import types
from dataclasses import dataclass

import torch

from . import (notation, diffusion, sizes, layers, attention, receptive, blocks,  # noqa: F401
               unet, vae_decoder)
from .registry import _REGISTRY, Entry, Result, Table, _equation_key, _section_key, format_error

# The row modules, in lecture order (§2, §3, §4, §6.1–6.7 and §6.11, §6.8, §7, §6.9–6.10, §8).
ROW_MODULES = ("notation", "diffusion", "sizes", "layers", "attention", "receptive", "blocks",
               "unet", "vae_decoder")

# Where the book shows each section: the chapter (a notebook of book/) of the section's rows.
CHAPTERS = {"2": "ch02_notation", "3": "ch03_freedom", "4": "ch04_variable_sizes",
            "5": "ch05_architecture", "6": "ch04_variable_sizes", "6.8": "ch06_attention",
            "6.9": "ch08_functions", "6.10": "ch08_functions", "7": "ch07_receptive_fields",
            "8": "ch08_functions"}


def chapter(section: str) -> str:
    """The chapter that shows a section's rows: the longest prefix of ``section`` in CHAPTERS."""
    parts = section.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in CHAPTERS:
            return CHAPTERS[".".join(parts[:k])]
    raise KeyError(f"no chapter shows section {section!r}")


def entries(section: str | None = None) -> list[Entry]:
    """All rows, in lecture order, or those of one section and its subsections."""
    rows = sorted(_REGISTRY.values(), key=lambda e: (_section_key(e.section), _equation_key(e.name)))
    if section is None:
        return rows
    if not re.fullmatch(r"\d+(\.\d+)*", str(section)):
        raise ValueError(f"section must look like '2' or '6.8.1'; got {section!r}")
    picked = [e for e in rows if e.section == section or e.section.startswith(section + ".")]
    if not picked:
        known = sorted({e.section for e in rows}, key=_section_key)
        raise ValueError(f"the ledger has no rows for section {section!r}; sections: {', '.join(known)}")
    return picked


def get(name: str) -> Entry:
    """The row of that name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no ledger row named {name!r}") from None


def check_consistency() -> list[str]:
    """Problems with the ledger itself: a 'differs' whose twin is missing or not 'matches'."""
    problems = []
    for e in entries():
        if e.verdict == "differs":
            twin = _REGISTRY.get(e.corrected_by)
            if twin is None:
                problems.append(f"{e.name}: corrected twin {e.corrected_by!r} is not in the ledger")
            elif twin.verdict != "matches":
                problems.append(f"{e.name}: corrected twin {e.corrected_by!r} is not a 'matches' row")
    return problems




HEADER = ("§", "lecture", "checked against", "error vs tolerance", "verdict")
_TOKEN = re.compile(r"\\[a-zA-Z]+|\\.|.", re.S)   # a TeX control word or symbol, or a character


def math_pieces(tex: str) -> list[str]:
    """A formula cut where a reader may break the line: after a top-level ``\\ `` (TeX's
    space), ``;`` or ``\\circ``, never inside brackets. Each piece is typeset on its own, so
    that a long formula wraps in its table cell instead of widening the table."""
    pieces, cur, depth = [], "", 0
    for tok in _TOKEN.findall(tex):
        cur += tok
        if tok in ("(", "[", "{"):
            depth += 1
        elif tok in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and tok in ("\\ ", ";", "\\circ"):
            pieces.append(cur[:-2] if tok == "\\ " else cur)   # the space: between pieces
            cur = ""
    return [p.strip() for p in pieces + [cur] if p.strip()]


def results_table(results: list[Result], title: str) -> Table:
    """Measured rows as the book shows them: the formula (typeset by MathJax), the reference, the
    error beside its tolerance, the verdict with its check mark, and SD-1.5's note."""
    n, ok = len(results), sum(r.ok for r in results)
    m = sum(r.entry.verdict == "matches" for r in results)
    summary = f"{title}: {n} rows, {m} matches, {n - m} differs; {ok}/{n} checks hold"
    rows, html_rows = [], []
    for r in results:
        e, esc = r.entry, html.escape
        verdict = e.verdict + ("" if e.corrected_by is None else f" → {e.corrected_by}")
        mark = "✓" if r.ok else "✗ FAILED"
        cmp = "≤" if e.verdict == "matches" else ">"
        error = f"{format_error(r.err)} {cmp} {format_error(e.tol)}"
        rows.append([e.section, e.name, e.reference, error, f"{verdict} {mark}"])
        note = f"<br><small>{esc(e.note)}</small>" if e.note else ""
        formula = " ".join(f"\\({esc(p)}\\)" for p in math_pieces(e.formula))
        html_rows.append([
            esc(e.section), f"{esc(e.name)}<br><small>{formula}</small>", esc(e.reference),
            f"{esc(error)}<br><small>error: {esc(e.error)}; tolerance: {esc(e.why_tol)}</small>",
            f"{esc(verdict)} {mark}{note}"])
    return Table(summary, HEADER, rows, html_rows=html_rows, ok=ok == n)


def table(section: str | None = None, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> Table:
    """Measure the rows of ``section`` (all rows when None) and return them as a table."""
    title = "Ledger" if section is None else f"Ledger §{section}"
    return results_table([e.run(seed=seed, dtype=dtype) for e in entries(section)], title)


def equations(name: str) -> tuple[int, ...]:
    """The lecture's equation numbers a row's name leads with: "(52)–(57) …" → 52, …, 57."""
    m = re.match(r"\((\d+)\)(?:[–-]\((\d+)\))?", name)
    if not m:
        return ()
    first = int(m.group(1))
    return tuple(range(first, int(m.group(2) or first) + 1))


def functions(entry: Entry) -> list[str]:
    """The lecture's functions a row checks: those it names (``checks``) and those its measure
    (and, for a "differs" row, its second route) calls, directly or through its own module's
    helpers."""
    found, seen, todo = list(entry.checks), set(), [entry.measure]
    if entry.route is not None:
        todo.insert(0, entry.route.compute)     # popped last: the measure's functions first
    while todo:
        f = inspect.unwrap(todo.pop())      # through decorators such as receptive.single_thread
        if f in seen or not isinstance(f, types.FunctionType):
            continue
        seen.add(f)
        for name in f.__code__.co_names + tuple(
                n for c in f.__code__.co_consts if isinstance(c, types.CodeType) for n in c.co_names):
            obj = f.__globals__.get(name)
            mod = getattr(obj, "__module__", "") or ""
            if callable(obj) and mod.startswith("sdanatomy.lecture."):
                q = f"{mod}.{obj.__qualname__}"
                if q not in found:
                    found.append(q)
            elif callable(obj) and mod == f.__module__:
                todo.append(obj)              # a helper of the row's own module
    return found


@dataclass(frozen=True)
class Where:
    """Everything about one equation: the functions that compute it, the rows, the chapter."""

    equation: int
    functions: tuple[str, ...]
    rows: tuple[str, ...]
    chapters: tuple[str, ...]

    def __repr__(self) -> str:
        return (f"({self.equation}): functions {', '.join(self.functions) or '—'}; "
                f"rows {'; '.join(self.rows)}; shown in {', '.join(self.chapters)}")


def where(equation) -> Where:
    """One hop from an equation to everything about it: ``where("(52)")`` or ``where(52)``.

    The rows whose name covers the equation, the lecture's functions their checks call, and the
    chapters that show them.
    """
    m = re.fullmatch(r"\(?(\d+)\)?", str(equation).strip())
    if not m:
        raise ValueError(f"an equation is a number such as '(52)' or 52; got {equation!r}")
    n = int(m.group(1))
    rows = [e for e in entries() if n in equations(e.name)]
    if not rows:
        raise KeyError(f"the ledger has no row for equation ({n})")
    found = []
    for e in rows:
        found += [f for f in functions(e) if f not in found]
    chapters = sorted({chapter(e.section) for e in rows})
    return Where(n, tuple(found), tuple(e.name for e in rows), tuple(chapters))


LAST_EQUATION = 96   # the lecture numbers its equations (1)–(96)


def coverage(last: int = LAST_EQUATION) -> dict[int, tuple[str, ...]]:
    """Each numbered equation (1)…(last) with the names of the rows that check it (possibly
    none): the appendix shows that none is left without a row."""
    names = [(e.name, equations(e.name)) for e in entries()]
    return {n: tuple(name for name, eqs in names if n in eqs) for n in range(1, last + 1)}
