"""sdanatomy.notation: the 1-based lecture notation against torch, and its errors."""
import math

import pytest
import torch

from sdanatomy.lecture import notation


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 4, 5), (8, 1, 7), (2, 6, 6)])
def test_flatten_literal_matches_vectorised_and_round_trips(shape):
    X = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    C, H, W = shape
    assert torch.equal(notation.flatten_literal(X), notation.flatten(X))
    assert torch.equal(notation.unflatten_literal(notation.flatten_literal(X), H, W), X)
    assert torch.equal(notation.unflatten(notation.flatten(X), H, W), X)


def test_flatten_keeps_a_batch_axis():
    X = torch.randn(2, 3, 4, 5)
    Y = notation.flatten(X)
    assert Y.shape == (2, 20, 3)
    assert torch.equal(Y[1], notation.flatten_literal(X[1]))


def test_flat_index_is_torch_row_major_plus_one():
    H, W = 5, 7
    order = torch.arange(H * W).reshape(H, W)
    for i in notation.integer_range(H):
        for j in notation.integer_range(W):
            assert notation.flat_index(i, j, W) == order[i - 1, j - 1].item() + 1


def test_inner_and_transpose_against_torch():
    g = torch.Generator().manual_seed(3)
    u, v = torch.randn(9, generator=g, dtype=torch.float64), torch.randn(9, generator=g, dtype=torch.float64)
    # float64, 9 products summed in two orders: ≤ 2·8·u·Σ|u_i v_i| = 7.5e-15 here,
    # 1.1e-14 of the dot (0.70): 1e-13 relative; abs_tol=0, the dot is far from 0
    assert math.isclose(notation.inner(u, v).item(), torch.dot(u, v).item(),
                        rel_tol=1e-13, abs_tol=0)
    A = torch.randn(4, 2, generator=g)
    assert torch.equal(notation.transpose(A), A.T)
    assert torch.equal(notation.row_vector(u), u[None, :])


@pytest.mark.parametrize("call, exc, match", [
    (lambda: notation.integer_range(0), ValueError, r"k in Z_\{>0\}"),
    (lambda: notation.integer_range(2.5), TypeError, "got float"),
    (lambda: notation.integer_range(True), TypeError, "got bool"),
    (lambda: notation.to_torch_index(0, 3), ValueError, r"\[1, 3\]_Z; got 0"),
    (lambda: notation.to_torch_index(4, 3), ValueError, r"\[1, 3\]_Z; got 4"),
    (lambda: notation.to_torch_index(1.0, 3), TypeError, "an index is an integer"),
    (lambda: notation.component(torch.ones(2, 2), 1), ValueError, "must be a vector"),
    (lambda: notation.component([1, 2], 1), TypeError, "must be a torch.Tensor"),
    (lambda: notation.inner(torch.ones(3), torch.ones(4)), ValueError, "same R\\^n"),
    (lambda: notation.transpose(torch.ones(2, 2, 2)), ValueError, "must be a matrix"),
    (lambda: notation.flatten_literal(torch.ones(2, 2)), ValueError, r"R\^\(C×H×W\)"),
    (lambda: notation.unflatten_literal(torch.ones(6, 2), 2, 2), ValueError, "H·W = 4 rows"),
    (lambda: notation.unflatten(torch.ones(6, 2), 4, 4), ValueError, "H·W=16"),
])
def test_bad_input_gets_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_infinite_range_is_lazy():
    it = notation.integer_range(math.inf)
    assert [next(it) for _ in range(3)] == [1, 2, 3]
