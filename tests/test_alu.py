"""TableALU (eq. 7 / eq. 11 without the dense table) against the literal dense table and `dcomp_isa`."""

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dcomp_alu import FFT_MIN_N, FFT_OPS, TableALU, dense_alu, dense_alu_table
from dcomp_isa import ALU_OPS, alu_int

MODES = ("auto", "table")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are small: threads gain nothing, and on an oversubscribed 2-core machine every threaded
    region can stall for a scheduler tick (~20 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dirichlet(*shape, dtype=torch.float64, generator=None):
    """Random distributions over the last dim (Dirichlet(1) via normalised exponentials)."""
    x = -torch.rand(*shape, dtype=torch.float64, generator=generator).log()
    return (x / x.sum(-1, keepdim=True)).to(dtype)


@functools.cache
def alu_for(n, mode):
    return TableALU(n, mode)


def one_hot_case(n, ops_and_pairs, dtype=torch.float32):
    """op_probs, u, v (batch, ·) one-hot for a list of (op, a, b), and the expected one-hot results."""
    ops, a, b = zip(*ops_and_pairs)
    eye = torch.eye(n, dtype=dtype)
    op_probs = torch.eye(len(ALU_OPS), dtype=dtype)[[ALU_OPS.index(op) for op in ops]]
    expected = eye[[alu_int(op, x, y, n) for op, x, y in ops_and_pairs]]
    return op_probs, eye[list(a)], eye[list(b)], expected


def assert_one_hot_results(alu, ops_and_pairs, expected, out):
    for row, (op, a, b) in enumerate(ops_and_pairs):
        if op in FFT_OPS and op in alu.closed_form_ops:  # FFT: exact up to float rounding
            torch.testing.assert_close(out[row], expected[row], atol=1e-6, rtol=0, msg=f"{op}({a}, {b})")
        else:
            assert torch.equal(out[row], expected[row]), f"{op}({a}, {b}): {out[row]}"


def test_dense_table_is_eq7_table():
    n = 5
    table = dense_alu_table(n)
    assert table.shape == (len(ALU_OPS), n, n, n) and torch.equal(table.sum(-1), torch.ones(len(ALU_OPS), n, n))
    for i, op in enumerate(ALU_OPS):
        for a in range(n):
            for b in range(n):
                assert table[i, a, b, alu_int(op, a, b, n)] == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [2, 3, 5, 8, 16, 33])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_matches_dense_einsum(n, mode, dtype, tol):
    gen = torch.Generator().manual_seed(n)
    op_probs = dirichlet(2, 3, len(ALU_OPS), dtype=dtype, generator=gen)
    u, v = dirichlet(2, 3, n, dtype=dtype, generator=gen), dirichlet(2, 3, n, dtype=dtype, generator=gen)
    table = dense_alu_table(n, dtype=dtype)
    expected = dense_alu(table, op_probs, u, v, form="einsum")
    out = alu_for(n, mode)(op_probs, u, v)
    assert out.dtype == dtype and out.shape == (2, 3, n)
    torch.testing.assert_close(out, expected, atol=tol, rtol=0)
    torch.testing.assert_close(dense_alu(table, op_probs, u, v, form="matmul"), expected, atol=tol, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_one_hot_every_op_and_pair_n8(mode):
    n = 8
    cases = [(op, a, b) for op in ALU_OPS for a in range(n) for b in range(n)]
    op_probs, u, v, expected = one_hot_case(n, cases)
    assert_one_hot_results(alu_for(n, mode), cases, expected, alu_for(n, mode)(op_probs, u, v))


@pytest.mark.parametrize("mode", MODES)
def test_one_hot_random_pairs_n128(mode):
    n, gen = 128, torch.Generator().manual_seed(0)
    pairs = torch.randint(0, n, (40, 2), generator=gen).tolist() + [[0, 0], [n - 1, n - 1], [n - 1, 0], [5, 0]]
    for op in ALU_OPS:  # one op per call: the zero op columns are skipped, which keeps this fast
        cases = [(op, a, b) for a, b in pairs]
        op_probs, u, v, expected = one_hot_case(n, cases)
        assert_one_hot_results(alu_for(n, mode), cases, expected, alu_for(n, mode)(op_probs, u, v))


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    op=st.sampled_from(ALU_OPS),
    a=st.integers(0, 127),
    b=st.integers(0, 127),
)
def test_one_hot_property_n128(mode, op, a, b):
    op_probs, u, v, expected = one_hot_case(128, [(op, a, b)])
    assert_one_hot_results(alu_for(128, mode), [(op, a, b)], expected, alu_for(128, mode)(op_probs, u, v))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [5, 64])
def test_output_mass_is_op_mass(n, mode):
    gen = torch.Generator().manual_seed(1)
    op_probs = torch.rand(16, len(ALU_OPS), generator=gen)  # deliberately not normalised
    u, v = dirichlet(16, n, dtype=torch.float32, generator=gen), dirichlet(16, n, dtype=torch.float32, generator=gen)
    out = alu_for(n, mode)(op_probs, u, v)
    torch.testing.assert_close(out.sum(-1), op_probs.sum(-1), atol=1e-5, rtol=0)
    assert (out > -1e-6).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [5, 7])
def test_gradcheck(n, mode):
    gen = torch.Generator().manual_seed(n)
    op_probs = dirichlet(3, len(ALU_OPS), generator=gen).requires_grad_()
    u, v = dirichlet(3, n, generator=gen).requires_grad_(), dirichlet(3, n, generator=gen).requires_grad_()
    alu = TableALU(n, mode).double()
    assert torch.autograd.gradcheck(alu, (op_probs, u, v))


def test_gradcheck_fft_closed_forms():
    """add/sub through the FFT (n ≥ FFT_MIN_N), recomputed in the backward like every closed form."""
    gen = torch.Generator().manual_seed(0)
    n = FFT_MIN_N + 1
    op_probs = dirichlet(2, len(ALU_OPS), generator=gen).requires_grad_()
    u, v = dirichlet(2, n, generator=gen).requires_grad_(), dirichlet(2, n, generator=gen).requires_grad_()
    alu = TableALU(n).double()
    assert torch.autograd.gradcheck(functools.partial(alu, ops=tuple(FFT_OPS)), (op_probs, u, v), fast_mode=True)


def test_fft_add_and_sub_of_one_hot_values_in_float32_are_one_hot():
    """The float32 machine's add/sub (FFT, n ≥ FFT_MIN_N) put no more than 1e-12 anywhere but on the result:
    a float32 FFT left ~1e-8 on every value, which a 250-step program compounded past its halting threshold
    (tests/test_python_compiler.py's example)."""
    n = 128
    a, b = torch.arange(n).repeat_interleave(n), torch.arange(n).repeat(n)  # every pair
    u, v = torch.nn.functional.one_hot(a, n).float(), torch.nn.functional.one_hot(b, n).float()
    alu, columns = TableALU(n), {op: i for i, op in enumerate(ALU_OPS)}
    for op, result in (("add", (a + b) % n), ("sub", (a - b) % n)):
        op_probs = torch.nn.functional.one_hot(torch.tensor(columns[op]), len(ALU_OPS)).float().expand(n * n, -1)
        out = alu(op_probs, u, v, ops=(op,))
        expected = torch.nn.functional.one_hot(result, n).float()
        assert (out - expected).abs().max() < 1e-12, op


def test_closed_forms_match_table_mode_at_larger_n():
    """Every closed form (FFT add/sub included) against the general index-table path, odd n, float64."""
    n, gen = 129, torch.Generator().manual_seed(7)
    auto, table = TableALU(n).double(), TableALU(n, "table").double()
    assert set(FFT_OPS) <= set(auto.closed_form_ops) and set(auto.table_ops) == {"mul", "div", "mod"}
    op_probs = torch.eye(len(ALU_OPS), dtype=torch.float64)  # one op per batch row
    u, v = dirichlet(len(ALU_OPS), n, generator=gen), dirichlet(len(ALU_OPS), n, generator=gen)
    torch.testing.assert_close(auto(op_probs, u, v), table(op_probs, u, v), atol=1e-12, rtol=0)
    op_probs, u, v = (x[:2].requires_grad_() for x in (dirichlet(3, len(ALU_OPS), generator=gen), u, v))
    assert torch.autograd.gradcheck(auto, (op_probs, u, v), fast_mode=True)


@pytest.mark.parametrize("mode", MODES)
def test_zero_op_columns_are_skipped_exactly(mode):
    """Ops with probability 0 everywhere may be skipped only when op_probs needs no gradient."""
    n, gen = 7, torch.Generator().manual_seed(3)
    op_probs = dirichlet(4, len(ALU_OPS), generator=gen)
    op_probs[:, [ALU_OPS.index(op) for op in ("mul", "add", "max", "eq")]] = 0
    u, v = dirichlet(4, n, generator=gen).requires_grad_(), dirichlet(4, n, generator=gen).requires_grad_()
    alu, table = TableALU(n, mode).double(), dense_alu_table(n, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda u, v: alu(op_probs, u, v), (u, v))

    # With op_probs requiring grad, the zero columns still get <ALU_op(u, v), grad_out>.
    op_probs.requires_grad_()
    grad_out = torch.rand(4, n, dtype=torch.float64, generator=gen)
    (grad,) = torch.autograd.grad((alu(op_probs, u, v) * grad_out).sum(), op_probs)
    (expected,) = torch.autograd.grad((dense_alu(table, op_probs, u, v) * grad_out).sum(), op_probs)
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)
    assert grad[:, ALU_OPS.index("mul")].abs().min() > 0


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16(mode):
    n, gen = 32, torch.Generator().manual_seed(4)
    op_probs = dirichlet(8, len(ALU_OPS), dtype=torch.float32, generator=gen)
    u, v = dirichlet(8, n, dtype=torch.float32, generator=gen), dirichlet(8, n, dtype=torch.float32, generator=gen)
    alu = alu_for(n, mode)
    out = alu(op_probs.bfloat16(), u.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), alu(op_probs, u, v), atol=2e-2, rtol=2e-2)


def test_broadcast_and_promotion():
    n, gen = 6, torch.Generator().manual_seed(5)
    op_probs = dirichlet(len(ALU_OPS), dtype=torch.float32, generator=gen)  # shared by every batch element
    u, v = dirichlet(2, 3, n, generator=gen), dirichlet(3, n, dtype=torch.float32, generator=gen)
    out = TableALU(n)(op_probs, u, v)
    assert out.shape == (2, 3, n) and out.dtype == torch.float64
    expected = dense_alu(dense_alu_table(n, dtype=torch.float64), op_probs.double(), u, v.double())
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_chunked_equals_unchunked():
    """One table row per chunk and many partial-sum blocks (n > 32 rows) against a single big chunk."""
    n, gen = 70, torch.Generator().manual_seed(6)
    op_probs = dirichlet(5, len(ALU_OPS), generator=gen).requires_grad_()
    u, v = dirichlet(5, n, generator=gen).requires_grad_(), dirichlet(5, n, generator=gen).requires_grad_()
    grad_out = torch.rand(5, n, dtype=torch.float64, generator=gen)
    results = []
    for chunk_elements in (1, 1 << 30):
        alu = TableALU(n, "table").double()
        alu.chunk_elements = chunk_elements
        out = alu(op_probs, u, v)
        results.append((out, *torch.autograd.grad((out * grad_out).sum(), (op_probs, u, v))))
    for chunked, unchunked in zip(*results):
        torch.testing.assert_close(chunked, unchunked, atol=1e-13, rtol=0)


def test_paths_and_table_bytes():
    assert TableALU(8, "table").table_ops == ALU_OPS and TableALU(8, "table").closed_form_ops == ()
    assert set(TableALU(8).table_ops) == {"add", "sub", "mul", "div", "mod"}  # no FFT below FFT_MIN_N
    assert TableALU(128).table_bytes() <= 1 << 20
    assert TableALU(128, "table").table_bytes() <= 1 << 20
    alu = TableALU(1024)
    assert 0 < alu.table_bytes() <= 10 << 20
    assert alu.index_tables.dtype == torch.int16 and TableALU(256).index_tables.dtype == torch.uint8


def test_buffers_persist_and_reset_after_meta_construction():
    reference = TableALU(16)
    assert set(reference.state_dict()) == {"index_tables"}
    with torch.device("meta"):
        alu = TableALU(16)
    alu = alu.to_empty(device="cpu")
    alu.reset_tables()
    assert torch.equal(alu.index_tables, reference.index_tables)
    alu.index_tables.zero_()
    alu.reset_tables()
    assert torch.equal(alu.index_tables, reference.index_tables)
    assert alu.ops == ALU_OPS and alu.n == 16


def test_invalid_arguments():
    with pytest.raises(ValueError, match="n"):
        TableALU(1)
    with pytest.raises(ValueError, match="mode"):
        TableALU(8, mode="dense")
    alu = TableALU(8)
    with pytest.raises(ValueError, match="op_probs"):
        alu(torch.ones(3), torch.ones(8), torch.ones(8))
    with pytest.raises(ValueError, match="form"):
        dense_alu(dense_alu_table(2), torch.ones(len(ALU_OPS)), torch.ones(2), torch.ones(2), form="loop")
