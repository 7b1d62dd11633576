"""Differentiable logic circuits on bit probabilities (paper Appendix C–D, eq. 12–13), and `CircuitALU`.

A bit tensor has shape ``(..., bits)``, least-significant bit first, and holds the probability that each bit
is 1. Every circuit here works for any width (8, 32, 64 bits ...) and broadcasts its operands' leading
dimensions. Unit (one-hot) encodings appear only at the boundary of `CircuitALU`, through the Appendix C
conversions `unit_to_binary` / `binary_to_unit`.

What the outputs mean:

* On 0/1 inputs every circuit is exact: it equals the integer semantics of `dcomp_isa.ALU_SEMANTICS` on
  values mod 2^bits (and exactly 0/1 outputs, in every float dtype).
* On probabilistic bits, read as *independent* coins, the gates (eq. 12–13) give the exact probability of
  their output. Both adders, `subtract`, `less_than`, `equal` and `any_bit` give the exact per-bit marginals
  P(result bit = 1) of the random result: each of their gates only ever combines independent quantities, or
  mutually exclusive events through `_carry`. `multiply`, `divide`, `maximum` and `minimum` reuse correlated
  intermediate bits as if independent, so on probabilistic bits they are approximations.
* The result bits of a circuit are correlated even where their marginals are exact; `binary_to_unit` treats
  them as independent, so `CircuitALU` is exact on one-hot values and an approximation elsewhere (unlike the
  table ALU, which is exact on any independent pair of distributions).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

try:
    from .dcomp_isa import ALU_OPS
except ImportError:  # loaded as a top-level module (tests, scripts)
    from dcomp_isa import ALU_OPS


# ---------------------------------------------------------------------------------------------------------
# Gates (eq. 12–13): probabilities of the output for independent input bits; exact on 0/1.
# ---------------------------------------------------------------------------------------------------------


def and_gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """and(a, b) = a·b (eq. 12)."""
    return a * b


def not_gate(a: torch.Tensor) -> torch.Tensor:
    """not(a) = 1 − a (eq. 13)."""
    return 1 - a


def xor_gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """xor(a, b) = (1 − a)·b + a·(1 − b) (eq. 13)."""
    return and_gate(not_gate(a), b) + and_gate(a, not_gate(b))


def or_gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """or(a, b) = a·b + (1 − a)·b + a·(1 − b) (eq. 12): and(a, b) plus the two terms of xor (eq. 13)."""
    return and_gate(a, b) + xor_gate(a, b)


def _carry(generate: torch.Tensor, propagate: torch.Tensor, carry_in: torch.Tensor) -> torch.Tensor:
    """P(carry out) = g + p·c of a block that generates a carry (g) or passes the incoming one on (p).

    A block cannot both generate and propagate, so the two events are mutually exclusive and their
    probabilities add: the textbook or(g, and(p, c)) (eq. 12) would subtract g·p·c as if they were
    independent, which ALU-NOTES measured up to 0.2 off. Exact when c is independent of the block's bits.
    """
    return generate + and_gate(propagate, carry_in)


def majority(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Exact carry of a full adder: P(at least two of a, b, c) = ab + ac + bc − 2abc for independent bits.

    Computed as `_carry(and(a, b), xor(a, b), c)` = ab + (a + b − 2ab)·c, the same polynomial.
    """
    return _carry(and_gate(a, b), xor_gate(a, b), c)


def all_bits(bits: torch.Tensor) -> torch.Tensor:
    """(..., bits) -> (...,): and over the last axis (eq. 12 folded: the product, in one kernel)."""
    return bits.prod(-1)


def any_bit(bits: torch.Tensor) -> torch.Tensor:
    """(..., bits) -> (...,): or over the last axis, as not(and(not ...)) = 1 − Π(1 − bit) (De Morgan).

    Exact for independent bits (the or-fold of eq. 12 gives the same polynomial).
    """
    return not_gate(all_bits(not_gate(bits)))


def mux(select: torch.Tensor, when_false: torch.Tensor, when_true: torch.Tensor) -> torch.Tensor:
    """select (...,), values (..., bits) -> (..., bits): when_true where select = 1, else when_false.

    and(not s, x) + and(s, y): the two terms are mutually exclusive, so the sum is exact when s is
    independent of the values; exact on 0/1 always.
    """
    select = select[..., None]
    return and_gate(not_gate(select), when_false) + and_gate(select, when_true)


# ---------------------------------------------------------------------------------------------------------
# Adders
# ---------------------------------------------------------------------------------------------------------

Adder = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _generate_propagate(
    a: torch.Tensor, b: torch.Tensor, carry_in: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Broadcast the operands; return per-bit generate and(a, b), propagate xor(a, b) and the carry-in."""
    a, b = torch.broadcast_tensors(a, b)
    carry_in = torch.zeros_like(a[..., 0]) if carry_in is None else carry_in.expand_as(a[..., 0])
    return and_gate(a, b), xor_gate(a, b), carry_in


def ripple_carry_add(
    a: torch.Tensor, b: torch.Tensor, carry_in: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """a + b + carry_in: (..., bits) twice -> (sum mod 2^bits (..., bits), carry out (...,)).

    One full adder per bit; the carry is `majority` (ab + ac + bc − 2abc), not the textbook or(g, p∧c):
    bits a_i, b_i and the carry c_i into bit i are independent (c_i depends only on lower bits), so the
    majority gives the exact P(c_{i+1}) and xor gives the exact P(sum_i). Semantics: exact on 0/1; on
    independent probabilistic bits, exact per-bit marginals. Gradient paths are `bits` full adders long.
    """
    generate, propagate, carry = _generate_propagate(a, b, carry_in)
    carries = []  # carries[i]: carry into bit i, (...,)
    for g, p in zip(generate.unbind(-1), propagate.unbind(-1)):
        carries.append(carry)
        carry = _carry(g, p, carry)  # = majority(a_i, b_i, carry), with g and p computed once for all bits
    return xor_gate(propagate, torch.stack(carries, -1)), carry


def parallel_prefix_add(
    a: torch.Tensor, b: torch.Tensor, carry_in: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kogge–Stone adder: same contract as `ripple_carry_add`, critical path log2(bits) carry combines.

    Level d merges every group of bits [i − 2^d + 1, i] with the adjacent lower group:
    G = G_hi + P_hi·G_lo (`_carry`) and P = P_hi·P_lo. G_hi ("the group generates") and P_hi ("every bit
    propagates") are mutually exclusive events of the high group's bits, independent of the low group's, so
    this combine is exact too: on independent probabilistic bits the outputs are the exact per-bit
    marginals, identical to the ripple adder's. (With the textbook or-combine it would not be.) The shorter
    gradient paths are the point: depth O(log bits) instead of O(bits).
    """
    generate, propagate, carry_in = _generate_propagate(a, b, carry_in)
    bits = generate.shape[-1]
    # Fold the carry-in into bit 0: prefix G[i] is then the carry out of bits [0, i]. The P of a group that
    # reaches bit 0 never feeds a G again (its lower group is the neutral one), so bit 0's P needs no update.
    carry_out_0 = _carry(generate[..., :1], propagate[..., :1], carry_in[..., None])
    group_g = torch.cat([carry_out_0, generate[..., 1:]], -1)
    group_p = propagate
    span = 1
    while span < bits:
        # The adjacent lower group of each group, shifted into place; below bit 0 lies the neutral group
        # (generates 0, propagates 1), which leaves the groups that already reach bit 0 unchanged.
        lower_g = torch.nn.functional.pad(group_g[..., :-span], (span, 0))
        lower_p = torch.nn.functional.pad(group_p[..., :-span], (span, 0), value=1.0)
        group_g, group_p = _carry(group_g, group_p, lower_g), and_gate(group_p, lower_p)
        span *= 2
    carries = torch.cat([carry_in[..., None], group_g[..., :-1]], -1)  # (..., bits): carry into bit i
    return xor_gate(propagate, carries), group_g[..., -1]


ADDERS: dict[str, Adder] = {"ripple": ripple_carry_add, "prefix": parallel_prefix_add}


def get_adder(name: str) -> Adder:
    """The adder called `name` ("ripple" or "prefix"); ValueError otherwise."""
    if name not in ADDERS:
        raise ValueError(f"unknown adder {name!r}; expected one of {sorted(ADDERS)}")
    return ADDERS[name]


# ---------------------------------------------------------------------------------------------------------
# Arithmetic and comparisons (width-generic, mod 2^bits). `adder` names the adder every sum goes through.
# ---------------------------------------------------------------------------------------------------------


def add(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> tuple[torch.Tensor, torch.Tensor]:
    """(a + b mod 2^bits, carry out) with the named adder."""
    return get_adder(adder)(a, b)


def subtract(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> tuple[torch.Tensor, torch.Tensor]:
    """Two's complement a + not(b) + 1: (a − b mod 2^bits (..., bits), borrow = P(a < b) (...,)).

    The carry out is 1 exactly when a ≥ b, so the borrow is its negation. not(b) keeps the bits independent,
    so semantics are those of the adder (exact marginals on independent bits).
    """
    b = not_gate(b)
    difference, carry = get_adder(adder)(a, b, torch.ones_like(b[..., 0]))
    return difference, not_gate(carry)


def less_than(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> torch.Tensor:
    """(...,) P(a < b): the borrow of `subtract` (exact for independent bits)."""
    return subtract(a, b, adder)[1]


def equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(...,) P(a == b) = Π_i not(xor(a_i, b_i)) (exact for independent bits)."""
    return all_bits(not_gate(xor_gate(a, b)))


def maximum(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> torch.Tensor:
    """max(a, b): mux on a < b (exact on 0/1 only: the comparison is correlated with a and b)."""
    return mux(less_than(a, b, adder), a, b)


def minimum(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> torch.Tensor:
    """min(a, b): mux on a < b (exact on 0/1 only)."""
    return mux(less_than(a, b, adder), b, a)


def multiply(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> torch.Tensor:
    """a·b mod 2^bits (exact on 0/1 only): the partial products and(a, b_i)·2^i, summed by a carry-save tree.

    Each level turns every three rows into their bitwise sum xor(x, y, z) and carry `majority(x, y, z)`·2
    (full adders side by side, no carry chains), so ~log_1.5(bits) levels bring the rows down to two, which
    the named adder sums: O(log bits) sequential tensor operations instead of bits − 1 additions.
    """
    a, b = torch.broadcast_tensors(a, b)
    bits = a.shape[-1]
    # rows[..., i, :] = and(a, b_i) shifted up by i (cut at bits): (..., bits, bits).
    rows = torch.stack([torch.nn.functional.pad(a[..., : bits - i], (i, 0)) for i in range(bits)], -2)
    rows = and_gate(rows, b[..., :, None])
    while rows.shape[-2] > 2:
        triples = rows.shape[-2] // 3 * 3
        x, y, z = rows[..., 0:triples:3, :], rows[..., 1:triples:3, :], rows[..., 2:triples:3, :]
        carry = torch.nn.functional.pad(majority(x, y, z)[..., :-1], (1, 0))  # the carry counts twice: shift up
        rows = torch.cat([xor_gate(xor_gate(x, y), z), carry, rows[..., triples:, :]], -2)
    if rows.shape[-2] == 1:
        return rows[..., 0, :]
    return add(rows[..., 0, :], rows[..., 1, :], adder)[0]


def divide(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> tuple[torch.Tensor, torch.Tensor]:
    """Restoring long division: (quotient a // b, remainder a mod b), both (..., bits) and 0 where b = 0.

    Divisor 0 gives quotient 0 and remainder 0, as `dcomp_isa` defines div and mod. Exact on 0/1 only.
    """
    a, b = torch.broadcast_tensors(a, b)
    bits = a.shape[-1]
    # The partial remainder gets one extra bit: before a subtraction it is 2r + a_i < 2·divisor ≤ 2^(bits+1).
    divisor = torch.cat([b, torch.zeros_like(b[..., :1])], -1)
    remainder = torch.zeros_like(divisor)
    quotient = []  # most significant bit first
    for i in reversed(range(bits)):
        # Shift the next dividend bit in (the remainder's top bit is 0, since remainder < divisor).
        shifted = torch.cat([a[..., i : i + 1], remainder[..., :-1]], -1)
        difference, borrow = subtract(shifted, divisor, adder)
        remainder = mux(borrow, difference, shifted)  # keep the shifted value when the divisor does not fit
        quotient.append(not_gate(borrow))
    divisor_nonzero = any_bit(b)[..., None]
    quotient_bits = torch.stack(quotient[::-1], -1)
    return and_gate(quotient_bits, divisor_nonzero), and_gate(remainder[..., :bits], divisor_nonzero)


def _flag(p: torch.Tensor, bits: int) -> torch.Tensor:
    """(...,) probability of the value 1 -> (..., bits) the value 0/1 in binary."""
    return torch.cat([p[..., None], p.new_zeros(p.shape + (bits - 1,))], -1)


# ---------------------------------------------------------------------------------------------------------
# Signed two's complement (the binary machine): the most significant bit is the sign.
# ---------------------------------------------------------------------------------------------------------


def negate(a: torch.Tensor, adder: str = "ripple") -> torch.Tensor:
    """−a mod 2^bits = not(a) + 1 (exact marginals on independent bits, like the adder)."""
    return get_adder(adder)(not_gate(a), torch.zeros_like(a), torch.ones_like(a[..., 0]))[0]


def absolute(a: torch.Tensor, adder: str = "ripple") -> torch.Tensor:
    """|a| as an unsigned value of the same width (|−2^(bits−1)| = 2^(bits−1) fits); exact on 0/1 only."""
    return mux(a[..., -1], a, negate(a, adder))


def _offset(a: torch.Tensor) -> torch.Tensor:
    """a + 2^(bits−1): flipping the sign bit maps signed order onto unsigned order."""
    return torch.cat([a[..., :-1], not_gate(a[..., -1:])], -1)


def signed_less_than(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> torch.Tensor:
    """(...,) P(a < b) for signed a, b: `less_than` on sign-flipped operands (exact for independent bits)."""
    return less_than(_offset(a), _offset(b), adder)


def signed_divide(a: torch.Tensor, b: torch.Tensor, adder: str = "ripple") -> tuple[torch.Tensor, torch.Tensor]:
    """Python's floor division and modulo on signed bits: (a // b, a % b), both 0 where b = 0 (exact on 0/1).

    From the unsigned division of the magnitudes, |a| = q|b| + r: with equal signs a // b = q and the
    remainder takes b's sign; with different signs a // b = −q when r = 0, else −q − 1 = not(q), and the
    remainder is |b| − r with b's sign. The wrap −2^(bits−1) // −1 = −2^(bits−1) follows.
    """
    a, b = torch.broadcast_tensors(a, b)
    magnitude_b = absolute(b, adder)
    quotient, remainder = divide(absolute(a, adder), magnitude_b, adder)
    signs_differ, inexact = xor_gate(a[..., -1], b[..., -1]), any_bit(remainder)
    negative_quotient = mux(inexact, negate(quotient, adder), not_gate(quotient))
    quotient = mux(signs_differ, quotient, negative_quotient)
    remainder = mux(and_gate(signs_differ, inexact), remainder, subtract(magnitude_b, remainder, adder)[0])
    return quotient, mux(b[..., -1], remainder, negate(remainder, adder))


def alu_bits(
    a: torch.Tensor, b: torch.Tensor, adder: str = "ripple", ops: tuple[str, ...] = ALU_OPS, signed: bool = False
) -> torch.Tensor:
    """The ALU ops `ops` on bit operands: (..., bits) twice -> (..., len(ops), bits), in `ops` order.

    The width-generic ALU (e.g. 32 bits, no unit encodings): results mod 2^bits with `dcomp_isa` semantics;
    inc/dec add/subtract the constant 1; and/or/not are logical on nonzero; eq/lt/and/or/not give 0/1. With
    `signed`, values are two's complement and lt, max, min, div and mod are signed (`dcomp_isa.alu_signed`:
    floor division and modulo as in Python); the other ops are the same circuits either way. Only the ops asked
    for are built (div and mod share one division, max/min/lt one comparison).
    """
    a, b = torch.broadcast_tensors(a, b)
    bits = a.shape[-1]
    one = _flag(torch.ones_like(a[..., 0]), bits)
    division = functools.cache(lambda: signed_divide(a, b, adder) if signed else divide(a, b, adder))
    less = functools.cache(lambda: signed_less_than(a, b, adder) if signed else less_than(a, b, adder))
    circuits = {
        "inc": lambda: add(a, one, adder)[0],
        "dec": lambda: subtract(a, one, adder)[0],
        "add": lambda: add(a, b, adder)[0],
        "sub": lambda: subtract(a, b, adder)[0],
        "mul": lambda: multiply(a, b, adder),
        "div": lambda: division()[0],
        "mod": lambda: division()[1],
        "max": lambda: mux(less(), a, b),
        "min": lambda: mux(less(), b, a),
        "eq": lambda: _flag(equal(a, b), bits),
        "lt": lambda: _flag(less(), bits),
        "and": lambda: _flag(and_gate(any_bit(a), any_bit(b)), bits),
        "or": lambda: _flag(or_gate(any_bit(a), any_bit(b)), bits),
        "not": lambda: _flag(not_gate(any_bit(a)), bits),
    }
    return torch.stack([circuits[op]() for op in ops], -2)


# ---------------------------------------------------------------------------------------------------------
# Conversions between unit (one-hot) and binary encodings (Appendix C)
# ---------------------------------------------------------------------------------------------------------


def num_bits(n: int) -> int:
    """log2(n) for n a power of two ≥ 2; ValueError naming n otherwise."""
    if n < 2 or n & (n - 1):
        raise ValueError(f"n must be a power of two >= 2 to convert unit encodings to bits, got n={n}")
    return n.bit_length() - 1


def int_to_bits(values: torch.Tensor, bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer tensor (...,) -> (..., bits) 0/1 in `dtype`, least-significant bit first (values mod 2^bits)."""
    shifts = torch.arange(bits, device=values.device)
    return ((values[..., None] >> shifts) & 1).to(dtype)


def bits_to_int(bits: torch.Tensor) -> torch.Tensor:
    """(..., bits) -> (...,) long: the integer whose bits are `bits` rounded to 0/1 (bits ≤ 63)."""
    shifts = torch.arange(bits.shape[-1], device=bits.device)
    return (bits.round().long() << shifts).sum(-1)


def bits_to_signed(bits: torch.Tensor) -> torch.Tensor:
    """(..., bits) -> (...,) long: the signed two's complement integer whose bits are `bits` rounded (≤ 64 bits).

    At 64 bits the int64 sum of `bits_to_int` wraps onto the two's complement value itself."""
    width = bits.shape[-1]
    value = bits_to_int(bits)
    return value if width >= 64 else value - (bits[..., -1].round().long() << width)


def binary_to_addresses(bits: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., b) bits -> (P(value = k) for k in [0, size) (..., size), the rest of the mass (...,)).

    Appendix C's binary → unit decode, only for the addresses that exist (memory cells, program lines): the low
    ⌈log2 size⌉ bits go through `binary_to_unit` and every higher bit (the sign bit included) must be 0, so a
    negative or too large value lands in the rest. Exact for independent bits; cost O(size), not O(2^b).
    """
    low = max(1, (size - 1).bit_length())
    if low >= bits.shape[-1]:
        raise ValueError(f"{size} addresses need more than the {bits.shape[-1] - 1} non-negative bits of a value")
    in_range = binary_to_unit(bits[..., :low])[..., :size] * all_bits(not_gate(bits[..., low:]))[..., None]
    return in_range, 1 - in_range.sum(-1)


def unit_to_binary(p: torch.Tensor) -> torch.Tensor:
    """(..., n) distribution over values -> (..., log2 n) per-bit marginals P(bit_i = 1) (Appendix C).

    A dot product with the n × b table of binary encodings. Exact on one-hot values; a general distribution
    keeps only its per-bit marginals.
    """
    n = p.shape[-1]
    return p @ int_to_bits(torch.arange(n, device=p.device), num_bits(n), p.dtype)


def binary_to_unit(bits: torch.Tensor) -> torch.Tensor:
    """(..., b) bit probabilities -> (..., 2^b) distribution over values (Appendix C's closed form).

    Each bit is an independent coin: P(value k) = Π_i (bit_i if bit i of k is 1 else 1 − bit_i), e.g.
    [(1−b1)(1−b0), (1−b1)b0, b1(1−b0), b1 b0] for two bits. Built one bit at a time: the distribution over
    the values of bits [0, i) splits into the halves "bit i = 0" and "bit i = 1" (2^(b+1) products in all,
    not b·2^b). Sums to 1 for any bits in [0, 1].
    """
    dist = torch.ones_like(bits[..., :1])  # (..., 1): the empty prefix
    for bit in bits.unbind(-1):
        bit = bit[..., None]
        dist = torch.cat([and_gate(dist, not_gate(bit)), and_gate(dist, bit)], -1)  # (..., 2^(i+1))
    return dist


# ---------------------------------------------------------------------------------------------------------
# The ALU
# ---------------------------------------------------------------------------------------------------------


class CircuitALU(torch.nn.Module):
    """Drop-in replacement for the table ALU (eq. 7/11) built from circuits (the paper's bootstrapping, §4.1).

    forward(op_probs (..., len(ALU_OPS)), u (..., n), v (..., n)) -> (..., n)
        = Σ_op op_probs[op] · binary_to_unit(alu_bits(unit_to_binary(u), unit_to_binary(v)))[op]

    Exact on one-hot u, v (equals `dcomp_isa.alu_int` for every op), linear in op_probs. On spread
    distributions it is an approximation: u and v are reduced to per-bit marginals and the result bits are
    recombined as independent. u and v must be distributions (sum 1; the machine's operands are): each
    op's result sums to 1, so the output mass is Σ op_probs (the table ALU's is Σ op_probs · Σu · Σv).
    Holds no tables (`table_bytes() == 0`); n must be a power of two.
    Computes in float64 for float64 inputs, else in float32, and returns the inputs' dtype.
    """

    def __init__(self, n: int, adder: str = "ripple"):
        super().__init__()
        self.bits = num_bits(n)
        get_adder(adder)  # fail at construction, not at the first step
        self.n, self.adder, self.ops = n, adder, ALU_OPS

    def table_bytes(self) -> int:
        return 0

    def extra_repr(self) -> str:
        return f"n={self.n}, bits={self.bits}, adder={self.adder!r}"

    def forward(
        self, op_probs: torch.Tensor, u: torch.Tensor, v: torch.Tensor, ops: tuple[str, ...] | None = None
    ) -> torch.Tensor:
        """`ops`, when given, are the only ops whose probability may be nonzero or whose gradient is needed."""
        if op_probs.shape[-1] != len(self.ops) or u.shape[-1] != self.n or v.shape[-1] != self.n:
            raise ValueError(
                f"expected op_probs (..., {len(self.ops)}), u and v (..., {self.n}); "
                f"got {tuple(op_probs.shape)}, {tuple(u.shape)}, {tuple(v.shape)}"
            )
        dtype = torch.promote_types(torch.promote_types(op_probs.dtype, u.dtype), v.dtype)
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        columns = [i for i, op in enumerate(self.ops) if ops is None or op in ops]
        chosen = tuple(self.ops[i] for i in columns)
        results = alu_bits(unit_to_binary(u.to(compute)), unit_to_binary(v.to(compute)), self.adder, chosen)
        units = binary_to_unit(results)  # (..., ops, n)
        return torch.einsum("...o,...on->...n", op_probs[..., columns].to(compute), units).to(dtype)


class BinaryALU(torch.nn.Module):
    """The ALU of eq. 7 on the binary encoding (the binary machine's ALU): bit probabilities in and out.

    forward(op_probs (..., len(ALU_OPS)), u (..., bits), v (..., bits)) -> (..., bits)
        = Σ_op op_probs[op] · alu_bits(u, v, signed=True)[op]

    Values are signed two's complement (`dcomp_isa.alu_signed`). The output is the op-weighted mixture of the
    result bits, with mass Σ op_probs (the machine divides the write probability out). Exact on 0/1 operands;
    on probabilistic bits each op has the semantics its circuit documents (exact marginals for the adders,
    comparisons and equality, approximations for mul, div, mod, max, min). Ops whose probability is 0 in every
    row are not built unless a gradient w.r.t. op_probs is needed (exact: their terms are 0), so a step of a
    sharp program pays only for the ops its lines hold.
    """

    encoding = "binary"

    def __init__(self, bits: int, adder: str = "prefix"):
        super().__init__()
        get_adder(adder)
        self.bits, self.adder, self.ops = bits, adder, ALU_OPS

    def table_bytes(self) -> int:
        return 0

    def extra_repr(self) -> str:
        return f"bits={self.bits}, adder={self.adder!r}"

    def forward(
        self, op_probs: torch.Tensor, u: torch.Tensor, v: torch.Tensor, ops: tuple[str, ...] | None = None
    ) -> torch.Tensor:
        """`ops`, when given, are the only ops whose probability may be nonzero or whose gradient is needed (the
        machine knows this from a program that needs no gradient): the others are not built."""
        if op_probs.shape[-1] != len(self.ops) or u.shape[-1] != self.bits or v.shape[-1] != self.bits:
            raise ValueError(
                f"expected op_probs (..., {len(self.ops)}), u and v (..., {self.bits}); "
                f"got {tuple(op_probs.shape)}, {tuple(u.shape)}, {tuple(v.shape)}"
            )
        if ops is not None:
            active = [i for i, op in enumerate(self.ops) if op in ops]
        elif op_probs.requires_grad and torch.is_grad_enabled():
            active = list(range(len(self.ops)))
        else:
            active = [i for i, used in enumerate((op_probs != 0).flatten(0, -2).any(0).tolist()) if used]
        shape = torch.broadcast_shapes(op_probs.shape[:-1], u.shape[:-1], v.shape[:-1]) + (self.bits,)
        if not active:
            return u.new_zeros(shape)
        results = alu_bits(u, v, self.adder, tuple(self.ops[i] for i in active), signed=True)  # (..., k, bits)
        return torch.einsum("...o,...ob->...b", op_probs[..., active], results).expand(shape)


# ---------------------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------------------


def gradient_path_length(output: torch.Tensor) -> int:
    """Longest chain of autograd nodes behind `output`: the circuit's depth in tensor operations.

    The paper's concern with circuits is their long gradient paths (Appendix D); this measures them.
    """
    depth: dict[object, int] = {}
    stack = [(output.grad_fn, False)]
    while stack:  # iterative post-order: a ripple adder's graph is deeper than Python's recursion limit
        node, children_done = stack.pop()
        if node is None or node in depth:
            continue
        children = [child for child, _ in node.next_functions if child is not None]
        if children_done:
            depth[node] = 1 + max((depth[child] for child in children), default=0)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if child not in depth)
    return depth.get(output.grad_fn, 0)
