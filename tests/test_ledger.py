"""The equation ledger: every row holds, and the ledger machinery itself behaves."""
import pytest
import torch

from sdanatomy import ledger
from sdanatomy.ledger import registry


@pytest.mark.parametrize("entry", ledger.entries(), ids=lambda e: e.name)
def test_ledger_row(entry):
    result = entry.run(seed=0, dtype=torch.float64)
    cmp = "<=" if entry.verdict == "matches" else ">"
    assert result.ok, f"{entry.name}: error {result.err:.1e} should be {cmp} {entry.tol:.0e} ({entry.why_tol})"


@pytest.mark.parametrize("entry", ledger.entries(), ids=lambda e: e.name)
def test_ledger_row_holds_for_other_seeds(entry):
    # The claims are about the functions, not about one random draw.
    assert entry.run(seed=1).ok and entry.run(seed=2).ok


def test_ledger_is_consistent():
    assert ledger.check_consistency() == []


def test_every_row_states_its_reference_and_tolerance_reason():
    for e in ledger.entries():
        assert e.reference.strip() and e.why_tol.strip() and e.formula.strip(), e.name


def test_table_renders_text_and_html():
    t = ledger.table(section="2")
    text, page = repr(t), t._repr_html_()
    assert t.all_ok and "Ledger §2" in text and "(2) inner product" in text
    assert page.startswith('<div class="ledger sdanatomy-table mathjax_process"><table class="ledger">')
    assert page.count("<tr>") == len(t.rows) + 1 == len(ledger.entries("2")) + 1


def _fake(verdict, err, tol=0.1, **kw):
    return registry.Entry("(0) fake", "0", "x", "ref", lambda seed, dtype: err, tol, "test", verdict, **kw)


def test_verdicts_mean_what_they_say():
    assert _fake("matches", 0.05).run().ok
    assert not _fake("matches", 0.5).run().ok
    assert _fake("differs", 0.5, corrected_by="(0) twin", note="why").run().ok
    assert not _fake("differs", 0.05, corrected_by="(0) twin", note="why").run().ok


@pytest.mark.parametrize("bad, match", [
    (dict(verdict="maybe"), "verdict must be one of"),
    (dict(verdict="differs"), "names its corrected twin"),
    (dict(verdict="matches", tol=-1.0), "tolerance must be >= 0"),
])
def test_bad_entries_are_rejected(bad, match):
    kw = dict(verdict="matches", err=0.0, tol=0.1) | bad
    with pytest.raises(ValueError, match=match):
        _fake(**kw)


@pytest.mark.parametrize("section, match", [("two", "must look like"), ("99", "no rows for section")])
def test_bad_sections_are_rejected(section, match):
    with pytest.raises(ValueError, match=match):
        ledger.entries(section)


def test_unknown_row_name():
    with pytest.raises(KeyError, match="no ledger row named"):
        ledger.get("(999) nothing")


def test_formulas_are_cut_only_between_top_level_pieces():
    # A table cell may wrap a long formula only where TeX has a top-level space, ";" or "\circ".
    from sdanatomy.ledger import math_pieces
    tex = r"(H_n,\ (H_1,\dots,H_n))\ \text{or}\ Y = a \circ b(Z);\ \left(x\ y\right)"
    assert math_pieces(tex) == [r"(H_n,\ (H_1,\dots,H_n))", r"\text{or}", r"Y = a \circ",
                                "b(Z);", r"\left(x\ y\right)"]
    for e in ledger.entries():                  # every piece of every row is balanced TeX
        for p in math_pieces(e.formula):
            assert not p.endswith("\\"), (e.name, p)
            assert p.count("(") == p.count(")") and p.count("{") == p.count("}"), (e.name, p)
