"""The equation ledger: every row holds, and the ledger machinery itself behaves."""
import pytest
import torch

from sdanatomy import ledger
from sdanatomy.ledger import registry


@pytest.mark.parametrize("entry", ledger.entries(), ids=lambda e: e.name)
def test_ledger_row(entry):
    result = entry.run(seed=0, dtype=torch.float64)
    cmp = "<=" if entry.verdict == "matches" else ">"
    assert result.err <= entry.tol if entry.verdict == "matches" else result.err > entry.tol, (
        f"{entry.name}: error {result.err:.1e} should be {cmp} {entry.tol:.0e} ({entry.why_tol})")
    if entry.verdict == "differs":
        assert result.route_ok, (f"{entry.name}: the printed reading's two routes disagree by "
                                 f"{result.route_err:.1e} (atol {entry.route.atol:.0e}, rtol "
                                 f"{entry.route.rtol:.0e}: {entry.route.why})")
    assert result.ok


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


def _route(printed=1.0, independent=1.0, atol=1e-12, rtol=1e-12):
    return registry.Route(lambda seed, dtype: (printed, independent), how="test", atol=atol, rtol=rtol,
                          why="test")


def _fake(verdict, err, tol=0.1, **kw):
    if verdict == "differs" and "corrected_by" in kw:
        kw.setdefault("route", _route())
    return registry.Entry("(0) fake", "0", "x", "ref", lambda seed, dtype: err, tol, "test", verdict, **kw)


def test_verdicts_mean_what_they_say():
    assert _fake("matches", 0.05).run().ok
    assert not _fake("matches", 0.5).run().ok
    assert _fake("differs", 0.5, corrected_by="(0) twin", note="why").run().ok
    assert not _fake("differs", 0.05, corrected_by="(0) twin", note="why").run().ok


def test_a_differs_row_fails_when_its_second_route_disagrees():
    # The difference is real (0.5 > 0.1), but the printed reading is computed wrongly.
    wrong = _fake("differs", 0.5, corrected_by="(0) twin", note="why", route=_route(1.0, 1.1))
    r = wrong.run()
    assert not r.ok and r.route_ok is False and r.route_err == pytest.approx(0.1, rel=1e-9, abs=0)
    right = _fake("differs", 0.5, corrected_by="(0) twin", note="why", route=_route(1.0, 1.0 + 1e-13))
    assert right.run().ok and right.run().route_ok


@pytest.mark.parametrize("a, b, atol, rtol, ok", [
    (1.0, 1.0, 0.0, 0.0, True),                         # exact
    (1.0, 1.0 + 1e-9, 0.0, 0.0, False),
    (1.0, 1.0 + 1e-9, 1e-8, 0.0, True),                 # within atol
    (100.0, 100.0 + 1e-9, 0.0, 1e-10, True),            # within rtol·|b| = 1e-8
    (100.0, 100.0 + 1e-7, 0.0, 1e-10, False),
    ([1, 2, 3], [1, 2, 3], 0.0, 0.0, True),             # lists of counts
    ([1, 2, 3], [1, 2], 0.0, 0.0, False),               # shapes differ
    (["ResnetBlock2D", "Conv1x1"], ["ResnetBlock2D", "Conv1x1"], 0.0, 0.0, True),   # kinds
    (["ResnetBlock2D"], ["Upsample2D"], 0.0, 0.0, False),
    (torch.ones(2, 3), torch.ones(3, 2), 1.0, 1.0, False),
])
def test_route_agreement_uses_atol_and_rtol(a, b, atol, rtol, ok):
    assert registry.agreement(a, b, atol=atol, rtol=rtol)[1] is ok


@pytest.mark.parametrize("bad, match", [
    (dict(verdict="maybe"), "verdict must be one of"),
    (dict(verdict="differs"), "names its corrected twin"),
    (dict(verdict="matches", tol=-1.0), "tolerance must be >= 0"),
    (dict(verdict="differs", corrected_by="(0) twin", note="why", route=None), "second route"),
    (dict(verdict="matches", route=_route()), "only a 'differs' entry has a second route"),
])
def test_bad_entries_are_rejected(bad, match):
    kw = dict(verdict="matches", err=0.0, tol=0.1) | bad
    with pytest.raises(ValueError, match=match):
        _fake(**kw)


@pytest.mark.parametrize("bad, match", [
    (dict(atol=-1.0), "atol and rtol must be >= 0"),
    (dict(rtol=float("nan")), "atol and rtol must be >= 0"),
    (dict(how=" "), "says what it computes"),
    (dict(why=""), "says what it computes"),
])
def test_bad_routes_are_rejected(bad, match):
    kw = dict(compute=lambda seed, dtype: (0.0, 0.0), how="h", atol=0.0, rtol=0.0, why="w") | bad
    with pytest.raises(ValueError, match=match):
        registry.Route(**kw)


def test_every_differs_row_has_a_second_route_that_names_its_tolerances():
    differs = [e for e in ledger.entries() if e.verdict == "differs"]
    assert len(differs) >= 37
    for e in differs:
        assert isinstance(e.route, registry.Route), e.name
        assert e.route.how.strip() and e.route.why.strip(), e.name
        assert e.route.atol >= 0 and e.route.rtol >= 0, e.name
    assert all(e.route is None for e in ledger.entries() if e.verdict == "matches")


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


def test_every_numbered_equation_has_a_row():
    # (1)–(96): the lecture's last numbered equation is (96); each has at least one row
    covered = ledger.coverage()
    assert sorted(covered) == list(range(1, 97))
    assert [n for n, rows in covered.items() if not rows] == []
    assert all(ledger.where(n).rows == rows for n, rows in covered.items())
