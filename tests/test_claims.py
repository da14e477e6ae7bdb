"""The catalogue of the lecture's claims in prose (sdanatomy.ledger.claims)."""
import json
import re
from pathlib import Path

import pytest

from sdanatomy import ledger
from sdanatomy.ledger import claims
from sdanatomy.ledger.claims import CLAIMS, Claim

ROOT = Path(__file__).resolve().parents[1]
LABEL = re.compile(r"^\(([\w-]+)\)=\s*$", re.M)


def _labels() -> set[str]:
    found = set()
    for path in (ROOT / "book").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                found |= set(LABEL.findall("".join(cell["source"])))
    return found


def test_every_named_row_is_in_the_ledger():
    names = {e.name for e in ledger.entries()}
    missing = [(c.claim, r) for c in CLAIMS for r in c.rows if r not in names]
    assert not missing, missing


def test_every_chapter_label_is_in_a_notebook():
    labels = _labels()
    assert "fn-network" in labels                  # the reader finds the labels at all
    missing = [(c.claim, c.chapter) for c in CLAIMS
               if c.chapter and c.chapter not in labels]
    assert not missing, missing


def test_every_verdict_but_holds_says_why_and_holds_names_its_check():
    for c in CLAIMS:
        assert c.verdict in claims.VERDICTS, c
        if c.verdict != "holds":
            assert c.reason.strip(), c
        if c.verdict in ("holds", "differs"):
            assert c.rows or c.chapter, c


def test_a_claim_is_refused_without_what_its_verdict_needs():
    with pytest.raises(ValueError, match="says why"):
        Claim("5.1", "x", chapter="fn-network", verdict="differs")
    with pytest.raises(ValueError, match="names its check"):
        Claim("5.1", "x")
    with pytest.raises(ValueError, match="no section"):
        Claim("11", "x", verdict="not checkable", reason="y")
    with pytest.raises(ValueError, match="verdict"):
        Claim("5.1", "x", verdict="maybe", reason="y")


def test_sections_are_the_lecture_s():
    assert all(c.section in claims.SECTIONS for c in CLAIMS)


def test_no_claim_twice():
    texts = [c.claim for c in CLAIMS]
    assert len(texts) == len(set(texts))


def test_every_section_with_prose_claims_is_covered():
    top = {c.section.split(".")[0] for c in CLAIMS}
    assert top == {str(n) for n in range(1, 11)}
    # the sections where the lecture argues in prose, each with claims of its own
    for s in ("3.1", "3.2", "4.1", "4.2", "5.1", "5.3", "5.5", "6.1", "6.7", "6.8.1",
              "6.9", "6.10", "7.2", "8.1", "8.2", "9"):
        assert s in claims.by_section(), s


def test_by_section_keeps_every_claim_in_lecture_order():
    grouped = claims.by_section()
    assert sum(len(v) for v in grouped.values()) == len(CLAIMS)
    assert list(grouped) == [s for s in claims.SECTIONS if s in grouped]


def test_the_table_has_a_row_per_claim():
    t = claims.table()
    assert t.header == ["§", "claim", "checked by", "verdict"]
    assert len(t.rows) == len(CLAIMS)
    assert t.ok is None                             # a table of facts
    n = claims.counts()
    assert sum(n.values()) == len(CLAIMS)
    assert str(len(CLAIMS)) in t.title


def test_lines_fit_88_columns():
    source = (ROOT / "src" / "sdanatomy" / "ledger" / "claims.py").read_text()
    long = [i for i, line in enumerate(source.splitlines(), 1) if len(line) > 88]
    assert not long, long
