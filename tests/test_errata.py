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


def test_check_reports_a_broken_pair():
    bad = errata.Erratum("(0)", "x", "y", "z", differs="(52)–(57) ResnetBlock2D", matches="no such row")
    saved = errata.ERRATA
    try:
        errata.ERRATA = saved + (bad,)
        problems = errata.check()
    finally:
        errata.ERRATA = saved
    assert any("is not a 'differs' row" in p for p in problems)
    assert any("is not a 'matches' row" in p for p in problems)
