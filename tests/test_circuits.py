"""Tests of dcomp_circuits: gates (eq. 12–13), adders, arithmetic, Appendix C conversions and CircuitALU."""

import pytest
import torch

from dcomp_circuits import (
    ADDERS,
    CircuitALU,
    add,
    alu_bits,
    and_gate,
    any_bit,
    binary_to_unit,
    bits_to_int,
    divide,
    equal,
    gradient_path_length,
    int_to_bits,
    less_than,
    majority,
    maximum,
    minimum,
    multiply,
    not_gate,
    or_gate,
    parallel_prefix_add,
    ripple_carry_add,
    subtract,
    unit_to_binary,
    xor_gate,
)
from dcomp_isa import ALU_OPS, ALU_SEMANTICS, alu_int

F64 = torch.float64


# Every width-generic circuit as (ALU op name -> (a, b, adder) -> result bits), checked against ALU_SEMANTICS.
CIRCUITS = {
    "add": lambda a, b, adder: add(a, b, adder)[0],
    "sub": lambda a, b, adder: subtract(a, b, adder)[0],
    "mul": multiply,
    "div": lambda a, b, adder: divide(a, b, adder)[0],
    "mod": lambda a, b, adder: divide(a, b, adder)[1],
    "max": maximum,
    "min": minimum,
    "lt": lambda a, b, adder: less_than(a, b, adder)[..., None],
    "eq": lambda a, b, adder: equal(a, b)[..., None],
}

# Python integer semantics for widths where int64 products overflow (32 bits); div/mod by 0 give 0.
PYTHON_SEMANTICS = {
    "add": lambda x, y, m: (x + y) % m,
    "sub": lambda x, y, m: (x - y) % m,
    "mul": lambda x, y, m: (x * y) % m,
    "div": lambda x, y, m: x // y if y else 0,
    "mod": lambda x, y, m: x % y if y else 0,
    "max": lambda x, y, m: max(x, y),
    "min": lambda x, y, m: min(x, y),
    "lt": lambda x, y, m: int(x < y),
    "eq": lambda x, y, m: int(x == y),
}


def _all_pairs(bits):
    """All (x, y) with x, y in [0, 2^bits), as two flat long tensors (a batch of 4^bits pairs)."""
    values = torch.arange(2**bits)
    return values.repeat_interleave(2**bits), values.repeat(2**bits)


def _is_binary(t):
    return bool(((t == 0) | (t == 1)).all())


# ----------------------------------------------------------------------------------------------- gates


def test_gates_truth_tables():
    a = torch.tensor([0.0, 0.0, 1.0, 1.0])
    b = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert and_gate(a, b).tolist() == [0, 0, 0, 1]
    assert or_gate(a, b).tolist() == [0, 1, 1, 1]
    assert xor_gate(a, b).tolist() == [0, 1, 1, 0]
    assert not_gate(a).tolist() == [1, 1, 0, 0]
    c = torch.tensor([0.0, 1.0])[:, None]  # (2, 1) x (4,) -> all 8 rows
    assert majority(a, b, c).tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]


def test_gates_probabilistic_definitions():
    a, b, c = torch.rand(3, 1000, dtype=F64)
    torch.testing.assert_close(or_gate(a, b), a * b + (1 - a) * b + a * (1 - b), rtol=0, atol=1e-15)  # eq. 12
    torch.testing.assert_close(xor_gate(a, b), (1 - a) * b + a * (1 - b), rtol=0, atol=1e-15)  # eq. 13
    torch.testing.assert_close(and_gate(a, b), a * b, rtol=0, atol=0)
    torch.testing.assert_close(not_gate(a), 1 - a, rtol=0, atol=0)
    majority_formula = a * b + a * c + b * c - 2 * a * b * c
    torch.testing.assert_close(majority(a, b, c), majority_formula, rtol=0, atol=1e-15)
    # and they are the probabilities of the output for independent coins
    torch.testing.assert_close(or_gate(a, b), 1 - (1 - a) * (1 - b), rtol=0, atol=1e-15)
    at_least_two = a * b * (1 - c) + a * (1 - b) * c + (1 - a) * b * c + a * b * c
    torch.testing.assert_close(majority(a, b, c), at_least_two, rtol=0, atol=1e-15)
    bits = torch.rand(50, 5, dtype=F64)
    torch.testing.assert_close(any_bit(bits), 1 - (1 - bits).prod(-1), rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------- circuits on 0/1 inputs


@pytest.mark.parametrize("adder", sorted(ADDERS))
@pytest.mark.parametrize("bits", range(1, 9))
def test_circuits_exhaustive(bits, adder):
    x, y = _all_pairs(bits)
    a, b = int_to_bits(x, bits), int_to_bits(y, bits)
    for op, circuit in CIRCUITS.items():
        out = circuit(a, b, adder)
        assert _is_binary(out), op
        assert torch.equal(bits_to_int(out), ALU_SEMANTICS[op](x, y, 2**bits)), op
    total, carry = ADDERS[adder](a, b, torch.ones(()))  # with a carry-in
    assert torch.equal(bits_to_int(torch.cat([total, carry[..., None]], -1)), x + y + 1)


@pytest.mark.parametrize("adder", sorted(ADDERS))
@pytest.mark.parametrize("bits", [16, 32])
def test_circuits_random_wide(bits, adder):
    gen = torch.Generator().manual_seed(bits)
    x = torch.randint(0, 2**bits, (300,), generator=gen)
    y = torch.randint(0, 2**bits, (300,), generator=gen)
    y[:10] = 0  # division by zero
    y[10:20] = x[10:20]  # equality, a − a
    a, b = int_to_bits(x, bits, F64), int_to_bits(y, bits, F64)
    for op, circuit in CIRCUITS.items():
        out = circuit(a, b, adder)
        expected = [PYTHON_SEMANTICS[op](xi, yi, 2**bits) for xi, yi in zip(x.tolist(), y.tolist())]
        assert _is_binary(out), op
        assert bits_to_int(out).tolist() == expected, op


@pytest.mark.parametrize("bits", range(1, 9))
def test_alu_bits_exhaustive(bits):
    """The width-generic ALU agrees with dcomp_isa for every op (inc/dec/and/or/not included)."""
    x, y = _all_pairs(bits)
    out = alu_bits(int_to_bits(x, bits), int_to_bits(y, bits))  # (pairs, ops, bits)
    assert out.shape == (len(x), len(ALU_OPS), bits) and _is_binary(out)
    for k, op in enumerate(ALU_OPS):
        assert torch.equal(bits_to_int(out[:, k]), ALU_SEMANTICS[op](x, y, 2**bits)), op


def test_ripple_and_prefix_agree_on_binary():
    x, y = torch.randint(0, 2**32, (2, 1000))
    a, b = int_to_bits(x, 32), int_to_bits(y, 32)
    carry_in = torch.randint(0, 2, (1000,)).float()
    for left, right in zip(ripple_carry_add(a, b, carry_in), parallel_prefix_add(a, b, carry_in)):
        assert torch.equal(left, right)


# ------------------------------------------------------------------ probabilistic semantics (independent bits)


def _exact_marginals(f, pa, pb, bits, out_bits):
    """(..., out_bits) P(bit k of f(x, y) = 1) for x, y with independent bits of probabilities pa, pb
    (..., bits), by enumerating all 4^bits pairs; f maps long tensors of x and y to long results."""
    x, y = _all_pairs(bits)
    table = int_to_bits(torch.arange(2**bits), bits, F64).bool()  # (values, bits)
    px = torch.where(table, pa[..., None, :], 1 - pa[..., None, :]).prod(-1)  # (..., values)
    py = torch.where(table, pb[..., None, :], 1 - pb[..., None, :]).prod(-1)
    weights = px[..., x] * py[..., y]  # (..., pairs)
    return weights @ int_to_bits(f(x, y), out_bits, F64)


@pytest.mark.parametrize("adder", sorted(ADDERS))
def test_adders_exact_marginals_on_independent_bits(adder):
    """Both adders (majority carry; Kogge–Stone with the exclusive combine) give the exact per-bit
    marginals of the sum and carry under independent input bits, carry-in included."""
    bits = 3
    pa, pb = torch.rand(2, 20, bits, dtype=F64)
    carry_in = torch.rand(20, dtype=F64)
    total, carry = ADDERS[adder](pa, pb, carry_in)
    # the carry-in is an independent coin: mix the enumerations for carry-in 0 and 1
    exact_0, exact_1 = (_exact_marginals(lambda x, y, c=c: x + y + c, pa, pb, bits, bits + 1) for c in (0, 1))
    exact = (1 - carry_in[:, None]) * exact_0 + carry_in[:, None] * exact_1
    torch.testing.assert_close(torch.cat([total, carry[:, None]], -1), exact, rtol=0, atol=1e-10)


def test_subtract_compare_exact_marginals_on_independent_bits():
    bits, m = 3, 8
    pa, pb = torch.rand(2, 20, bits, dtype=F64)
    difference, borrow = subtract(pa, pb)
    exact_difference = _exact_marginals(lambda x, y: (x - y) % m, pa, pb, bits, bits)
    torch.testing.assert_close(difference, exact_difference, rtol=0, atol=1e-10)
    exact_lt = _exact_marginals(lambda x, y: (x < y).long(), pa, pb, bits, 1)[:, 0]
    torch.testing.assert_close(borrow, exact_lt, rtol=0, atol=1e-10)
    torch.testing.assert_close(less_than(pa, pb), exact_lt, rtol=0, atol=1e-10)
    exact_eq = _exact_marginals(lambda x, y: (x == y).long(), pa, pb, bits, 1)[:, 0]
    torch.testing.assert_close(equal(pa, pb), exact_eq, rtol=0, atol=1e-10)


def test_multiply_is_only_an_approximation_on_probabilistic_bits():
    """Documented limitation: the shift-and-add multiplier reuses correlated bits."""
    bits = 3
    pa, pb = torch.rand(2, 20, bits, dtype=F64, generator=torch.Generator().manual_seed(0))
    exact = _exact_marginals(lambda x, y: (x * y) % 8, pa, pb, bits, bits)
    assert (multiply(pa, pb) - exact).abs().max() > 1e-2


# ------------------------------------------------------------------------------- gradients and depth


def test_gradcheck_parallel_prefix_add():
    a, b = torch.rand(2, 3, 5, dtype=F64, requires_grad=True)
    carry_in = torch.rand(3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: parallel_prefix_add(a, b, c), (a, b, carry_in))


def test_gradcheck_circuit_alu():
    alu = CircuitALU(8, adder="prefix")
    op_probs = torch.softmax(torch.randn(2, len(ALU_OPS), dtype=F64), -1).requires_grad_()
    u, v = torch.softmax(torch.randn(2, 2, 8, dtype=F64), -1).requires_grad_().unbind(0)
    assert torch.autograd.gradcheck(alu, (op_probs, u, v))
    assert torch.autograd.gradcheck(CircuitALU(8, adder="ripple"), (op_probs, u, v))


def test_prefix_adder_gradient_paths_grow_logarithmically():
    """Doubling the width adds one Kogge–Stone level (a constant) but doubles the ripple's path; a prefix
    adder rewritten as a ripple fails both comparisons."""

    def path(adder, bits):
        a = torch.rand(bits, requires_grad=True)
        return gradient_path_length(ADDERS[adder](a, torch.rand(bits))[0])

    prefix = [path("prefix", bits) for bits in (8, 16, 32, 64)]
    ripple = [path("ripple", bits) for bits in (8, 16, 32, 64)]
    steps = [hi - lo for lo, hi in zip(prefix, prefix[1:])]
    assert len(set(steps)) == 1 and steps[0] <= 8, prefix  # constant depth per level
    assert ripple[-1] - ripple[-2] >= 2 * (ripple[-2] - ripple[-3]) - 2, ripple  # linear in bits
    assert prefix[-1] * 3 < ripple[-1], (prefix, ripple)


# ------------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("n", [2, 8, 64])
def test_conversions_round_trip_one_hot(n):
    bits = n.bit_length() - 1
    one_hot = torch.eye(n)
    assert torch.equal(unit_to_binary(one_hot), int_to_bits(torch.arange(n), bits))
    assert torch.equal(binary_to_unit(unit_to_binary(one_hot)), one_hot)


def test_binary_to_unit_closed_form():
    b0, b1 = 0.3, 0.8
    expected = [(1 - b1) * (1 - b0), (1 - b1) * b0, b1 * (1 - b0), b1 * b0]  # Appendix C's 2-bit example
    torch.testing.assert_close(binary_to_unit(torch.tensor([b0, b1], dtype=F64)), torch.tensor(expected, dtype=F64))
    probs = torch.rand(4, 7, 10, dtype=F64)
    units = binary_to_unit(probs)
    assert units.shape == (4, 7, 1024) and (units >= 0).all()
    torch.testing.assert_close(units.sum(-1), torch.ones(4, 7, dtype=F64))
    torch.testing.assert_close(unit_to_binary(units), probs)  # independent bits survive the round trip


@pytest.mark.parametrize("n", [1, 3, 12, 100])
def test_conversions_need_power_of_two(n):
    with pytest.raises(ValueError, match=f"n={n}"):
        unit_to_binary(torch.ones(n) / n)
    with pytest.raises(ValueError, match=f"n={n}"):
        CircuitALU(n)


# -------------------------------------------------------------------------------------------- the ALU


@pytest.mark.parametrize("adder", sorted(ADDERS))
@pytest.mark.parametrize("n", [8, 16])
def test_circuit_alu_one_hot_all_pairs(n, adder):
    alu = CircuitALU(n, adder)
    assert alu.n == n and alu.ops == ALU_OPS and alu.table_bytes() == 0
    x, y = (t.tolist() for t in _all_pairs(n.bit_length() - 1))
    u, v = torch.eye(n)[x], torch.eye(n)[y]
    for k, op in enumerate(ALU_OPS):
        out = alu(torch.eye(len(ALU_OPS))[k].expand(len(x), -1), u, v)
        expected = [alu_int(op, xi, yi, n) for xi, yi in zip(x, y)]
        assert torch.equal(out, torch.eye(n)[expected]), op


def test_circuit_alu_one_hot_random_pairs_n128():
    n, pairs = 128, 200
    x, y = torch.randint(0, n, (2, pairs)).tolist()
    y[:5] = [0] * 5
    alu = CircuitALU(n, "prefix")
    out = alu(torch.eye(len(ALU_OPS))[:, None, :], torch.eye(n)[x], torch.eye(n)[y])  # (ops, pairs, n)
    for k, op in enumerate(ALU_OPS):
        assert torch.equal(out[k], torch.eye(n)[[alu_int(op, xi, yi, n) for xi, yi in zip(x, y)]]), op


def test_circuit_alu_mixture_dtypes_and_shapes():
    n = 16
    alu = CircuitALU(n)
    op_probs = torch.softmax(torch.randn(3, 5, len(ALU_OPS), dtype=F64), -1)
    x, y = torch.randint(0, n, (2, 5))
    one_hot = torch.eye(n, dtype=F64)
    u, v = one_hot[x], one_hot[y]
    expected = sum(op_probs[..., k, None] * one_hot[ALU_SEMANTICS[op](x, y, n)] for k, op in enumerate(ALU_OPS))
    out = alu(op_probs, u, v)  # (3, 5, n): op_probs broadcast against the values' batch
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)
    for dtype in (torch.float32, torch.bfloat16):
        low = alu(op_probs.to(dtype), u.to(dtype), v.to(dtype))
        assert low.dtype == dtype
        torch.testing.assert_close(low.double(), expected, rtol=0, atol=1e-2 if dtype == torch.bfloat16 else 1e-6)
    spread_u, spread_v = torch.softmax(torch.randn(2, 5, n, dtype=F64), -1)
    spread = alu(op_probs, spread_u, spread_v)
    torch.testing.assert_close(spread.sum(-1), torch.ones(3, 5, dtype=F64))  # still a distribution
    with pytest.raises(ValueError, match="adder"):
        CircuitALU(n, adder="carry-lookahead")
    with pytest.raises(ValueError, match="op_probs"):
        alu(op_probs[..., :3], u, v)
