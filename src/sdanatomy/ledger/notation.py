"""Ledger rows of §2, notation: each notation, implemented literally, against torch's own operation."""
from __future__ import annotations

import itertools
import math
import torch
from sdanatomy.ledger.registry import row
from sdanatomy.lecture.notation import (component, flat_index, flatten, flatten_literal, inner, integer_range, row_vector, transpose, unflatten, unflatten_literal)

# --- ledger rows, §2 ------------------------------------------------------------------

EXACT = "indices and copies: no arithmetic, so exactly equal"


@row("[1,k]_Z integer ranges", section="2", formula=r"[1,k]_{\mathbb{Z}} = \{1,\dots,k\}",
            reference="torch.arange(1, k + 1); Z>0 for k = +∞", tol=0, why_tol=EXACT,
            error="mismatched integers")
def _row_integer_range(seed=0, dtype=torch.float64):
    bad = 0
    for k in range(1, 65):
        bad += list(integer_range(k)) != torch.arange(1, k + 1).tolist()
    bad += list(itertools.islice(integer_range(math.inf), 1000)) != list(range(1, 1001))
    return float(bad)


@row("(1) vector components", section="2", formula=r"\boldsymbol v = [v_1,\dots,v_n]^\top",
            reference="torch indexing v[i - 1]", tol=0, why_tol=EXACT)
def _row_component(seed=0, dtype=torch.float64):
    v = torch.randn(17, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    literal = torch.stack([component(v, i) for i in integer_range(17)])
    return (literal - v).abs().max().item()


@row("(2) inner product", section="2", formula=r"\langle u,v\rangle = \sum_{i=1}^{n} u_i v_i",
            reference="torch.dot", tol=1e-13,
            why_tol="float64, n = 768 terms summed in another order: |err| ≤ n·u·Σ|u_i v_i| ≈ 8.5e-14",
            error="|err| / Σ|u_i v_i|")
def _row_inner(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(768, generator=g, dtype=dtype), torch.randn(768, generator=g, dtype=dtype)
    return ((inner(u, v) - torch.dot(u, v)).abs() / (u * v).abs().sum()).item()


@row("(3)–(4) transpose", section="2", formula=r"(\boldsymbol A^\top)_{j,i} = a_{i,j}",
            reference="torch.Tensor.T", tol=0, why_tol=EXACT)
def _row_transpose(seed=0, dtype=torch.float64):
    A = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return (transpose(A) - A.T).abs().max().item()


@row("(5) transpose of a vector", section="2", formula=r"\boldsymbol v^\top = [v_1\ \cdots\ v_n]",
            reference="v.unsqueeze(0), shape (1, n)", tol=0, why_tol=EXACT)
def _row_row_vector(seed=0, dtype=torch.float64):
    v = torch.randn(6, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    r = row_vector(v)
    return math.inf if r.shape != (1, 6) else (r - v.unsqueeze(0)).abs().max().item()


@row("(25) flatten", section="2",
            formula=r"\mathrm{flatten}_{(H,W)}(\underline X)_{(i-1)W+j,\,c} = X_{c,i,j}",
            reference="diffusers' token layout: X.permute(0, 2, 3, 1).reshape(B, H·W, C)", tol=0,
            why_tol=EXACT)
def _row_flatten(seed=0, dtype=torch.float64):
    X = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(seed), dtype=dtype)  # H ≠ W
    reference = X[None].permute(0, 2, 3, 1).reshape(1, 4 * 5, 3)[0]   # as Transformer2DModel does
    return max((flatten_literal(X) - reference).abs().max().item(),
               (flatten(X) - reference).abs().max().item())


@row("(26) unflatten", section="2",
            formula=r"\mathrm{unflatten}_{(H,W)}(\boldsymbol Y)_{c,i,j} = Y_{(i-1)W+j,\,c}",
            reference="diffusers' inverse: Y.reshape(B, H, W, C).permute(0, 3, 1, 2)", tol=0, why_tol=EXACT)
def _row_unflatten(seed=0, dtype=torch.float64):
    Y = torch.randn(4 * 5, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    reference = Y[None].reshape(1, 4, 5, 3).permute(0, 3, 1, 2)[0]
    return max((unflatten_literal(Y, 4, 5) - reference).abs().max().item(),
               (unflatten(Y, 4, 5) - reference).abs().max().item())


@row("(25)–(26) 1-based ↔ 0-based index map", section="2",
            formula=r"(i,j)\mapsto (i-1)W+j \ \text{(bijective)}",
            reference="torch's row-major order: arange(H·W).reshape(H, W)[i − 1, j − 1] + 1", tol=0,
            why_tol="integers: exact", error="mismatched indices")
def _row_index_map(seed=0, dtype=torch.float64):
    bad = 0
    for H, W in [(1, 1), (3, 5), (8, 8), (7, 2), (64, 64)]:
        torch_order = torch.arange(H * W).reshape(H, W)
        rows = [flat_index(i, j, W) for i in integer_range(H) for j in integer_range(W)]
        bad += sorted(rows) != list(integer_range(H * W))                      # onto and one-to-one
        bad += sum(flat_index(i, j, W) != torch_order[i - 1, j - 1].item() + 1
                   for i in integer_range(H) for j in integer_range(W))
    return float(bad)
