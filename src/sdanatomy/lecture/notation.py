"""Notation, lecture §2: the lecture's symbols and their code counterparts.

The lecture counts from 1 (``v_1, …, v_n``; ``[1, k]_Z``), torch counts from 0. This
module is the one visible place where the two meet: every function below takes the
lecture's 1-based indices and converts them with :func:`to_torch_index`. Each notation
is implemented literally (loops over the lecture's index ranges) so that it can be
checked against the vectorised torch operation that the rest of the book, and diffusers,
use.

Shape alphabet used everywhere in the book: see :data:`SHAPE_ALPHABET`.
"""
from __future__ import annotations

import itertools
import math
from typing import Iterable

import torch


# One shape alphabet for the whole book (STYLE.md, habit 6).
SHAPE_ALPHABET = {
    "B": "batch size",
    "C": "channels (C_in, C_out where they differ)",
    "H, W": "height and width of an image or latent",
    "N": "number of image tokens, N = H·W",
    "M": "number of context (text) tokens; 77 for SD-1.5's CLIP",
    "d": "width of a query/key head",
    "d_v": "width of a value head",
    "d_ctx": "width of a context token; 768 for SD-1.5's CLIP",
    "d_t": "width of the time embedding; 1280 in the SD-1.5 U-Net",
    "k, s, p": "kernel size, stride, padding of a convolution",
    "G": "number of GroupNorm groups",
}


# --- integers and indices -------------------------------------------------------------

def integer_range(k) -> Iterable[int]:
    """[1, k]_Z, §2: {1, …, k} for finite k, Z_{>0} for k = +∞ (as a lazy iterator)."""
    if k == math.inf:
        return itertools.count(1)
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"[1, k]_Z needs k in Z_{{>0}} ∪ {{+∞}}; "
                        f"got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"[1, k]_Z needs k in Z_{{>0}} ∪ {{+∞}}; got k={k}")
    return range(1, k + 1)


def to_torch_index(i: int, n: int) -> int:
    """The lecture's 1-based index i ∈ [1, n]_Z as torch's 0-based index i − 1."""
    if isinstance(i, bool) or not isinstance(i, int):
        raise TypeError(f"an index is an integer; got {type(i).__name__} {i!r}")
    if not 1 <= i <= n:
        raise ValueError(f"the lecture's indices run over [1, {n}]_Z; got {i}")
    return i - 1


def flat_index(i: int, j: int, W: int) -> int:
    """Row of token (i, j) in flatten_{(H,W)}, (25): (i − 1)·W + j, 1-based."""
    return (i - 1) * W + j


# --- vectors and matrices (1)–(5) -----------------------------------------------------

def _check_vector(v: torch.Tensor, name: str) -> None:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(v).__name__}")
    if v.dim() != 1:
        raise ValueError(f"{name} must be a vector (1 axis); "
                         f"got shape {tuple(v.shape)}")


def _check_matrix(A: torch.Tensor, name: str = "A") -> None:
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(A).__name__}")
    if A.dim() != 2:
        raise ValueError(f"{name} must be a matrix in R^{{m,n}} (2 axes); "
                         f"got shape {tuple(A.shape)}")


def component(v: torch.Tensor, i: int) -> torch.Tensor:
    """v_i, (1): the i-th component of v ∈ R^n, i ∈ [1, n]_Z."""
    _check_vector(v, "v")
    return v[to_torch_index(i, v.shape[0])]


def element(A: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """a_{i,j}, (3): row i ∈ [1, m]_Z, column j ∈ [1, n]_Z of A ∈ R^{m,n}."""
    _check_matrix(A)
    m, n = A.shape
    return A[to_torch_index(i, m), to_torch_index(j, n)]


def inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """⟨u, v⟩, (2): Σ_{i=1}^{n} u_i v_i, summed literally in index order.

    The lecture writes the upper limit as d_emb; for u, v ∈ R^n it is n.
    """
    _check_vector(u, "u")
    _check_vector(v, "v")
    if u.shape != v.shape:
        raise ValueError(f"⟨u, v⟩ needs u, v in the same R^n; "
                         f"got {tuple(u.shape)} and {tuple(v.shape)}")
    total = torch.zeros((), dtype=u.dtype, device=u.device)
    for i in integer_range(u.shape[0]):
        total = total + component(u, i) * component(v, i)   # (2)
    return total


def transpose(A: torch.Tensor) -> torch.Tensor:
    """A^T ∈ R^{n,m}, (4): the (j, i) element of A^T is a_{i,j}."""
    _check_matrix(A)
    m, n = A.shape
    At = torch.empty((n, m), dtype=A.dtype, device=A.device)
    for i in integer_range(m):
        for j in integer_range(n):
            At[to_torch_index(j, n), to_torch_index(i, m)] = element(A, i, j)   # (4)
    return At


def row_vector(v: torch.Tensor) -> torch.Tensor:
    """v^T = [v_1 ⋯ v_n] ∈ R^{1,n}, (5): a column vector v ∈ R^{n,1} transposed."""
    _check_vector(v, "v")
    return transpose(v.reshape(-1, 1))   # v as the n×1 matrix of (1), then (4)


# --- tensors: flatten and unflatten (25)–(26) -----------------------------------------

def _check_chw(X: torch.Tensor) -> None:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch.Tensor; got {type(X).__name__}")
    if X.dim() != 3:
        raise ValueError(f"flatten_(H,W) takes X ∈ R^(C×H×W) (3 axes); "
                         f"got shape {tuple(X.shape)}")


def flatten_literal(X: torch.Tensor) -> torch.Tensor:
    """flatten_{(H,W)}(X) ∈ R^{(HW)×C}, (25), element by element, 1-based indices."""
    _check_chw(X)
    C, H, W = X.shape
    Y = torch.empty((H * W, C), dtype=X.dtype, device=X.device)
    for c in integer_range(C):
        for i in integer_range(H):
            for j in integer_range(W):
                n = flat_index(i, j, W)                   # (25): token n = (i−1)W + j
                Y[to_torch_index(n, H * W), c - 1] = X[c - 1, i - 1, j - 1]
    return Y


def unflatten_literal(Y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """unflatten_{(H,W)}(Y) ∈ R^{C×H×W}, (26), element by element, 1-based indices."""
    _check_matrix(Y, "Y")
    if Y.shape[0] != H * W:
        raise ValueError(f"unflatten_(H,W) needs Y with H·W = {H * W} rows; "
                         f"got {Y.shape[0]}")
    C = Y.shape[1]
    X = torch.empty((C, H, W), dtype=Y.dtype, device=Y.device)
    for c in integer_range(C):
        for i in integer_range(H):
            for j in integer_range(W):
                n = flat_index(i, j, W)                   # (26): token n = (i−1)W + j
                X[c - 1, i - 1, j - 1] = Y[to_torch_index(n, H * W), c - 1]
    return X


def flatten(X: torch.Tensor) -> torch.Tensor:
    """flatten_{(H,W)}, (25), vectorised: (…, C, H, W) -> (…, N, C) with N = H·W."""
    if not isinstance(X, torch.Tensor) or X.dim() < 3:
        raise ValueError(f"flatten_(H,W) takes (…, C, H, W); "
                         f"got {getattr(X, 'shape', type(X))}")
    return X.flatten(-2).transpose(-1, -2)   # (…, C, H, W) -> (…, C, N) -> (…, N, C)


def unflatten(Y: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """unflatten_{(H,W)}, (26), vectorised: (…, N, C) -> (…, C, H, W)."""
    if not isinstance(Y, torch.Tensor) or Y.dim() < 2 or Y.shape[-2] != H * W:
        raise ValueError(f"unflatten_(H,W) takes (…, H·W={H * W}, C); "
                         f"got {getattr(Y, 'shape', type(Y))}")
    return Y.transpose(-1, -2).unflatten(-1, (H, W))   # (…, N, C) -> (…, C, H, W)
