"""The table of SD-1.5's 32 attention modules that chapter 6 shows (lecture §6.8).

The rows come from :func:`sdanatomy.sd15.attention.sd15_attention_table`; this module only lays
them out, one line per block and kind, in the book's one :class:`~sdanatomy.ledger.registry.Table`.
"""
from __future__ import annotations

from sdanatomy.ledger.registry import Table


def _attention_groups(rows: list[dict]) -> list[list[dict]]:
    """The modules of each block, self and cross apart, in U-Net order."""
    groups: dict = {}
    for r in rows:
        block = ".".join(r["module"].split(".")[:2]) if r["module"].startswith(("down", "up")) else "mid_block"
        groups.setdefault((block, r["kind"]), []).append(r)
    return list(groups.values())


_TABLE_HEAD = ("block", "n", "kind", "H×W", "N", "C", "M×d_ctx", "h", "d", "W_Q = W_O", "W_K, W_V",
               "scores h·N·M")


def _table_cells(rs: list[dict]) -> tuple[str, ...]:
    r = rs[0]
    block = ".".join(r["module"].split(".")[:2]) if r["module"].startswith(("down", "up")) else "mid_block"
    shape = lambda wt: "×".join(map(str, wt[::-1]))   # noqa: E731  lecture orientation: weight^T
    return (block, str(len(rs)), r["kind"], r["HW"], str(r["N"]), str(r["C"]), f"{r['M']}×{r['d_ctx']}",
            str(r["heads"]), str(r["d"]), shape(r["to_q"]), shape(r["to_k"]), f"{r['scores']:,}")


def attention_table(rows: list[dict]) -> Table:
    """sd15_attention_table's rows, one line per block and kind.

    Matrices in the lecture's orientation (W_Q ∈ R^{d_in × h·d} is to_q.weight transposed; in SD-1.5
    W_O has the same shape); "n" counts the modules; "scores" is h·N·M, the attention weights one
    module computes per image.
    """
    return Table("SD-1.5's attention modules, one line per block and kind", _TABLE_HEAD,
                 [_table_cells(rs) for rs in _attention_groups(rows)])
