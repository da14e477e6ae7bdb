"""The errata table of §6.9–6.11 and §8: every entry backed by a ledger pair, every disagreement listed."""
from sdanatomy.ledger import errata
from sdanatomy import ledger

SECTIONS = ("6.9", "6.10", "6.11", "8.1", "8.2")


def test_every_erratum_names_a_differs_row_and_its_corrected_twin():
    assert errata.check() == []


def test_every_differs_row_of_these_sections_is_an_erratum():
    listed = {e.differs for e in errata.ERRATA}
    differs = {e.name for s in SECTIONS for e in ledger.entries(s) if e.verdict == "differs"}
    assert differs - listed == set()


def _check_with(bad):
    """errata.check() with one planted erratum added."""
    saved = errata.ERRATA
    try:
        errata.ERRATA = saved + (bad,)
        return errata.check()
    finally:
        errata.ERRATA = saved


def test_check_reports_a_broken_pair():
    bad = errata.Erratum("(0)", "x", "y", "z", differs="(52)–(57) ResnetBlock2D", matches="no such row")
    problems = _check_with(bad)
    assert any("is not a 'differs' row" in p for p in problems)
    assert any("is not a 'matches' row" in p for p in problems)


def test_every_erratum_has_one_kind_and_the_kinds_partition_the_errata():
    kinds = [errata.kind(e) for e in errata.ERRATA]
    assert set(kinds) == set(errata.KIND_ORDER)
    assert set(errata.KINDS) == {e.differs for e in errata.ERRATA}   # no stale kind


def test_an_erratum_without_a_kind_is_reported():
    bad = errata.Erratum("(0)", "x", "y", "z", differs="no kind given", matches="m")
    assert any("has no kind" in p for p in _check_with(bad))


def test_table_rejects_an_unknown_kind():
    import pytest
    with pytest.raises(ValueError, match="kind must be one of"):
        errata.table(kind="typos")
