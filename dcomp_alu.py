"""The table ALU of the differentiable computer: eq. 7 (= eq. 11) without the dense table.

Eq. 7 reads ``o_l = T_ijkl f_i u_j v_k``: ``T`` is a one-hot table over (op, a, b, result), ``f`` the op
distribution and ``u``, ``v`` the operand distributions over the n values. Written out per op,

    ALU_op(u, v)[c] = Σ_{a, b: op(a, b) = c} u_a v_b          (unary ops: Σ_a u_a [op(a) = c] · Σ_b v_b)
    o = Σ_op f_op · ALU_op(u, v)

which is bilinear in (u, v). The dense table has |A|·n³ entries (56 GiB in float32 for the 14 ops at
n = 1024), so `TableALU` computes the same sums in two exact ways instead:

* closed forms for ops with structure: add/sub are circular convolution/correlation (FFT, for n ≥ 33),
  inc/dec a roll of u, max/min/lt products with cumulative sums, eq/lt/and/or/not put mass on 0 and 1 only;
* an integer index table ``idx[op, a, b] = op(a, b)`` (from `dcomp_isa.alu_index_table`) for the rest
  (mul, div, mod; every op in ``mode="table"``), contracted by a chunked scatter whose backward is the
  matching chunked gather.

Both keep only the operands for the backward: the closed forms' backward is written out from their adjoints
(`_ClosedForms`), the index tables' is a gather. Both are the same bilinear map as the dense table, so values and
gradients equal eq. 7 up to rounding; `dense_alu_table` and `dense_alu` are that literal baseline (for tests and
benchmarks). Run-time code: imports only torch and the sibling `dcomp_isa`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    from .dcomp_isa import ALU_OPS, alu_index_table
except ImportError:
    from dcomp_isa import ALU_OPS, alu_index_table


MODES = ("auto", "table")

# Ops with an exact closed form (`TableALU._closed_forms`); every other op goes through the index table.
CLOSED_FORM_OPS = frozenset({"inc", "dec", "add", "sub", "max", "min", "eq", "lt", "and", "or", "not"})
# add/sub use the FFT from this n on. Below it their index table costs about the same (measured fwd+bwd at
# n ≤ 32, batch ≤ 64: 0.3–0.6 ms vs 0.2–0.4 ms for the FFT), is exact on one-hot inputs, and avoids MKL's
# threaded FFT, which stalls ~20 ms per call at small batch when a 2-core machine is oversubscribed.
FFT_MIN_N = 33
FFT_OPS = frozenset({"add", "sub"})

# Elements of the (rows, n, batch) outer-product slab the index-table path materialises at once (1 MiB
# float32): measured fastest on CPU, and it bounds the path's scratch memory independently of n and batch.
DEFAULT_CHUNK_ELEMENTS = 1 << 18
# Index-table rows accumulated into one float32 partial sum before it is added to the total: a hot output
# bin (div/mod put ~n²/2 products into value 0) then sums ≤ 32·n terms at a time, keeping the relative error
# near 1e-6 at n = 1024 instead of ~2e-4 for one long running sum.
PARTIAL_SUM_ROWS = 32


def index_dtype(max_value: int) -> torch.dtype:
    """The smallest integer dtype that holds every value in [0, max_value]."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def _chunks(start: int, stop: int, step: int):
    return ((i, min(i + step, stop)) for i in range(start, stop, step))


def _chunk_rows(n: int, batch: int, chunk_elements: int) -> int:
    """Index-table rows per chunk so that a (rows, n, batch) slab stays within `chunk_elements`."""
    return max(1, min(PARTIAL_SUM_ROWS, chunk_elements // (n * batch)))


class _IndexTableProduct(torch.autograd.Function):
    """``R[batch, k, c] = Σ_{a, b: idx[rows[k], a, b] = c} u[batch, a] · v[batch, b]`` (eq. 7 per op).

    Forward scatters the outer product u ⊗ v into the result bins a few table rows at a time; backward is the
    matching gather, ``grad_u[a] = Σ_b v_b g[idx[a, b]]`` and ``grad_v[b] = Σ_a u_a g[idx[a, b]]``. Only u, v
    (and the table buffer) are saved, never an outer product; scratch memory is O(chunk_elements). Batch is
    the last (contiguous) dimension inside: each scattered update is then a row of `batch` values, which is
    several times faster than a scalar scatter and does not stall on the hot bins of div/mod/eq-like tables.
    """

    @staticmethod
    def forward(ctx, u, v, index_tables, rows, chunk_elements):
        ctx.save_for_backward(u, v, index_tables, rows)
        ctx.chunk_elements = chunk_elements
        batch, n = u.shape
        u_t, v_t = u.t().contiguous(), v.t().contiguous()  # (n, batch)
        out = u.new_zeros(len(rows), n, batch)  # (k, n, batch)
        partial = torch.zeros_like(out)
        step = _chunk_rows(n, batch, chunk_elements)
        for p0, p1 in _chunks(0, n, PARTIAL_SUM_ROWS):
            for a0, a1 in _chunks(p0, p1, step):
                outer = (u_t[a0:a1, None, :] * v_t[None, :, :]).view(-1, batch)  # ((a1 - a0) * n, batch)
                index = index_tables[:, a0:a1].index_select(0, rows).flatten(1).long()  # (k, (a1 - a0) * n)
                for k in range(len(rows)):
                    partial[k].index_add_(0, index[k], outer)
            out += partial
            partial.zero_()
        return out.permute(2, 0, 1)  # (batch, k, n)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        u, v, index_tables, rows = ctx.saved_tensors
        batch, n = u.shape
        u_t, v_t = u.t().contiguous(), v.t().contiguous()  # (n, batch)
        grad_t = grad_out.permute(1, 2, 0).contiguous()  # (k, n, batch)
        grad_u_t, grad_v_t = torch.empty_like(u_t), torch.zeros_like(v_t)
        for a0, a1 in _chunks(0, n, _chunk_rows(n, batch, ctx.chunk_elements)):
            index = index_tables[:, a0:a1].index_select(0, rows).flatten(1).long()  # (k, (a1 - a0) * n)
            gathered = grad_t[0].index_select(0, index[0])
            for k in range(1, len(rows)):
                gathered += grad_t[k].index_select(0, index[k])
            gathered = gathered.view(a1 - a0, n, batch)  # g[idx[a, b]] summed over ops
            grad_v_t += (gathered * u_t[a0:a1, None, :]).sum(0)
            torch.sum(gathered.mul_(v_t), 1, out=grad_u_t[a0:a1])
        return grad_u_t.t(), grad_v_t.t(), None, None, None


class _ClosedForms(torch.autograd.Function):
    """Eq. 7's ``Σ_op w_op · ALU_op(u, v)`` over closed-form `ops`: w `(batch, k)` (one column per op, in `ops` order),
    u, v and the result `(batch, n)`.

    Every ALU_op is bilinear in (u, v), so with its adjoints ``D_op = ∂⟨g, ALU_op(u, v)⟩/∂u`` and ``E_op = ∂⟨g,
    ALU_op(u, v)⟩/∂v`` (`closed_form_adjoints`): ``∂u = Σ w_op D_op``, ``∂v = Σ w_op E_op`` and ``∂w_op = ⟨u,
    D_op⟩`` (linear in u). Autograd keeps u, v and w only: no result, FFT spectrum or cumulative sum, and
    nothing is recomputed."""

    @staticmethod
    def forward(ctx, ops, weights, u, v):
        ctx.ops = ops
        ctx.save_for_backward(weights, u, v)
        full, ones = closed_forms(u, v, ops)
        columns = dict(zip(ops, weights.unbind(1)))
        out = u.new_zeros(u.shape)
        for op, result in full.items():
            out.addcmul_(columns[op][:, None], result)
        if ones:  # boolean ops: mass x on value 1 and Σu·Σv − x on value 0
            on_one = sum(columns[op] * x for op, x in ones.items())
            out[:, 0] += sum(columns[op] for op in ones) * u.sum(-1) * v.sum(-1) - on_one
            out[:, 1] += on_one
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        weights, u, v = ctx.saved_tensors
        adjoints = closed_form_adjoints(grad, u, v, ctx.ops)
        columns = weights.unbind(1)
        grad_weights = torch.stack([(u * adjoints[op][0]).sum(-1) for op in ctx.ops], 1)
        grad_u = sum(w[:, None] * adjoints[op][0] for op, w in zip(ctx.ops, columns))
        grad_v = sum(w[:, None] * adjoints[op][1] for op, w in zip(ctx.ops, columns))
        return None, grad_weights, grad_u, grad_v


class TableALU(torch.nn.Module):
    """The ALU of eq. 7 / eq. 11 over `dcomp_isa.ALU_OPS`, exact and without the dense |A|·n³ table.

    forward(op_probs (..., len(ALU_OPS)), u (..., n), v (..., n)) -> (..., n)
        = Σ_op op_probs[op] · ALU_op(u, v),  ALU_op(u, v)[c] = Σ_{a, b: op(a, b) = c} u_a v_b

    (unary ops: Σ_a u_a [op(a) = c] · Σ_b v_b), i.e. exactly ``T_ijkl f_i u_j v_k`` with the one-hot table of
    `dense_alu_table`, for any u, v (not only distributions) and any broadcastable leading dims. Output mass
    is Σ op_probs · Σu · Σv. Computes in float64 for float64 inputs, else in float32, and returns the
    promoted input dtype. Ops whose probability is 0 in every row are skipped when no gradient w.r.t.
    op_probs is needed (exact: their terms are 0); otherwise every op is evaluated, since
    d out / d op_probs[op] = ALU_op(u, v).

    Args:
        n: number of values (one-hot width), ≥ 2.
        mode: "auto" (closed forms where an op has structure, index tables for the rest) or "table" (index
            tables for every op: the general path, competitive at small n).

    Attributes:
        closed_form_ops, table_ops: which ops take which path (auto, n ≥ 33: mul, div, mod on tables).
        chunk_elements: scratch size of the index-table path, in elements (tests shrink it).

    Buffers:
        index_tables (len(table_ops), n, n), persistent, the smallest integer dtype holding n - 1:
            ``index_tables[i, a, b] = table_ops[i](a, b)``; refilled in place by `reset_tables`.
    """

    index_tables: torch.Tensor  # (table ops, n, n): result value of each op per input pair, a buffer

    def __init__(self, n: int, mode: str = "auto"):
        super().__init__()
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n must be an integer >= 2, got {n!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.n, self.mode, self.ops = n, mode, ALU_OPS
        self.chunk_elements = DEFAULT_CHUNK_ELEMENTS
        structured: frozenset[str] = frozenset()
        if mode == "auto":
            structured = CLOSED_FORM_OPS if n >= FFT_MIN_N else CLOSED_FORM_OPS - FFT_OPS
        self.closed_form_ops = tuple(op for op in ALU_OPS if op in structured)
        self.table_ops = tuple(op for op in ALU_OPS if op not in structured)
        self._column = {op: i for i, op in enumerate(ALU_OPS)}
        self.register_buffer(
            "index_tables", torch.empty(len(self.table_ops), n, n, dtype=index_dtype(n - 1)), persistent=True
        )
        self.reset_tables()

    @torch.no_grad()
    def reset_tables(self) -> None:
        """(Re)fill the index tables in place from `dcomp_isa` (after meta-device construction, e.g.)."""
        if self.index_tables.is_meta:
            return
        with torch.device(self.index_tables.device):
            for i, op in enumerate(self.table_ops):
                self.index_tables[i].copy_(alu_index_table(op, self.n))

    def table_bytes(self) -> int:
        """Bytes held in buffers (the index tables)."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self.buffers())

    def extra_repr(self) -> str:
        return f"n={self.n}, mode={self.mode!r}, table_ops={self.table_ops}"

    def forward(
        self, op_probs: torch.Tensor, u: torch.Tensor, v: torch.Tensor, ops: tuple[str, ...] | None = None
    ) -> torch.Tensor:
        """`ops`, when given, are the only ops whose probability may be nonzero or whose gradient is needed (the
        machine knows this from a program that needs no gradient): the others are not evaluated."""
        n, num_ops = self.n, len(self.ops)
        if op_probs.shape[-1] != num_ops or u.shape[-1] != n or v.shape[-1] != n:
            raise ValueError(
                f"expected op_probs (..., {num_ops}), u and v (..., {n}); "
                f"got {tuple(op_probs.shape)}, {tuple(u.shape)}, {tuple(v.shape)}"
            )
        dtype = torch.promote_types(torch.promote_types(op_probs.dtype, u.dtype), v.dtype)
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        batch_shape = torch.broadcast_shapes(op_probs.shape[:-1], u.shape[:-1], v.shape[:-1])
        f = op_probs.to(compute).expand(*batch_shape, num_ops).reshape(-1, num_ops)  # (batch, |A|)
        u_ = u.to(compute).expand(*batch_shape, n).reshape(-1, n)  # (batch, n)
        v_ = v.to(compute).expand(*batch_shape, n).reshape(-1, n)  # (batch, n)

        active = self._active_ops(f, op_probs.requires_grad) if ops is None else frozenset(ops)
        closed = tuple(op for op in self.closed_form_ops if op in active)
        table_ops = [op for op in self.table_ops if op in active]
        out = u_.new_zeros(u_.shape)  # (batch, n)
        if table_ops:
            rows = torch.tensor([self.table_ops.index(op) for op in table_ops], device=u_.device)
            results = _IndexTableProduct.apply(u_, v_, self.index_tables, rows, self.chunk_elements)  # (batch, k, n)
            out = out + (results * self._columns(f, table_ops)[..., None]).sum(1)
        if closed:
            out = out + _ClosedForms.apply(closed, self._columns(f, closed), u_, v_)
        return out.reshape(*batch_shape, n).to(dtype)

    def _columns(self, f: torch.Tensor, ops) -> torch.Tensor:
        """The columns of f for `ops` (index_select: advanced indexing enters a threaded region even when tiny)."""
        return f.index_select(1, torch.tensor([self._column[op] for op in ops], device=f.device))

    def _active_ops(self, f: torch.Tensor, needs_op_grad: bool) -> frozenset[str]:
        """Ops to evaluate: all of them, or — when no gradient w.r.t. op_probs is needed — only those with a
        nonzero probability somewhere (skipping the others changes nothing: their terms are exactly 0)."""
        if needs_op_grad and torch.is_grad_enabled():
            return frozenset(self.ops)
        used = f.ne(0).any(0).tolist()
        return frozenset(op for op, on in zip(self.ops, used) if on)


def closed_forms(u: torch.Tensor, v: torch.Tensor, ops) -> tuple[dict, dict]:
    """Exact closed forms of ALU_op(u, v) (see `dense_alu_table`). Returns ``full`` (op → (batch, n)
    result) and ``ones`` (boolean op → (batch,) mass on value 1)."""
    n = u.shape[-1]
    sum_u, sum_v = u.sum(-1, keepdim=True), v.sum(-1, keepdim=True)  # (batch, 1)
    full, ones = {}, {}
    if "inc" in ops:  # (a + 1) mod n
        full["inc"] = u.roll(1, -1) * sum_v
    if "dec" in ops:
        full["dec"] = u.roll(-1, -1) * sum_v
    if "add" in ops or "sub" in ops:
        # Circular convolution / correlation: Σ_a u_a v_{c−a} and Σ_b u_{c+b} v_b. In float64: a float32 FFT
        # leaves ~1e-8 on every value of a one-hot sum, which `lt`'s CDF piles up and a long run compounds (a
        # 250-step program fell below the halting threshold); float64 leaves ~1e-17.
        u_hat, v_hat = torch.fft.rfft(u.double()), torch.fft.rfft(v.double())  # (batch, n // 2 + 1)
        if "add" in ops:
            full["add"] = torch.fft.irfft(u_hat * v_hat, n).to(u.dtype)
        if "sub" in ops:
            full["sub"] = torch.fft.irfft(u_hat * v_hat.conj(), n).to(u.dtype)
    if {"max", "min", "lt"} & set(ops):
        cdf_u, cdf_v = u.cumsum(-1), v.cumsum(-1)  # (batch, n): Σ_{a ≤ c} u_a
        below_u = F.pad(cdf_u[:, :-1], (1, 0))  # Σ_{a < c} u_a
    # Sums of products instead of differences of CDF products: no cancellation, error ~eps relative.
    if "max" in ops:  # [a = c, b ≤ c] + [b = c, a < c]
        full["max"] = u * cdf_v + v * below_u
    if "min" in ops:  # [a = c, b ≥ c] + [b = c, a > c]
        full["min"] = u * (sum_v - cdf_v + v) + v * (sum_u - cdf_u)
    if "eq" in ops:
        ones["eq"] = (u * v).sum(-1)
    if "lt" in ops:  # Σ_b v_b Σ_{a < b} u_a
        ones["lt"] = (v * below_u).sum(-1)
    if "and" in ops:  # (a != 0) and (b != 0)
        ones["and"] = u[:, 1:].sum(-1) * v[:, 1:].sum(-1)
    if "or" in ops:  # everything but a = b = 0
        ones["or"] = sum_u[:, 0] * sum_v[:, 0] - u[:, 0] * v[:, 0]
    if "not" in ops:  # a == 0
        ones["not"] = u[:, 0] * sum_v[:, 0]
    return full, ones


def closed_form_adjoints(grad: torch.Tensor, u: torch.Tensor, v: torch.Tensor, ops) -> dict:
    """op → (D, E), the adjoints of `closed_forms` against the gradient g of the mixture's result (all `(batch,
    n)`): ``D = ∂⟨g, ALU_op(u, v)⟩/∂u``, ``E = ∂⟨g, ALU_op(u, v)⟩/∂v``; a boolean op's result is Σu·Σv − x on
    value 0 and x on value 1."""
    n = u.shape[-1]
    sum_u, sum_v = u.sum(-1, keepdim=True), v.sum(-1, keepdim=True)  # (batch, 1)
    adjoints = {}
    if "inc" in ops:  # roll(u, 1) Σv
        adjoints["inc"] = (grad.roll(-1, -1) * sum_v, (grad * u.roll(1, -1)).sum(-1, keepdim=True).expand_as(v))
    if "dec" in ops:
        adjoints["dec"] = (grad.roll(1, -1) * sum_v, (grad * u.roll(-1, -1)).sum(-1, keepdim=True).expand_as(v))
    if "add" in ops or "sub" in ops:
        g_hat, u_hat, v_hat = torch.fft.rfft(grad), torch.fft.rfft(u), torch.fft.rfft(v)
        if "add" in ops:  # Σ_a u_a v_{c−a}: D_a = Σ_c g_c v_{c−a}, E_b = Σ_c g_c u_{c−b}
            adjoints["add"] = (torch.fft.irfft(g_hat * v_hat.conj(), n), torch.fft.irfft(g_hat * u_hat.conj(), n))
        if "sub" in ops:  # Σ_b u_{c+b} v_b: D_a = Σ_b g_{a−b} v_b, E_b = Σ_a u_a g_{a−b}
            adjoints["sub"] = (torch.fft.irfft(g_hat * v_hat, n), torch.fft.irfft(u_hat * g_hat.conj(), n))
    if {"max", "min", "lt"} & set(ops):
        cdf_u, cdf_v = u.cumsum(-1), v.cumsum(-1)
        below_u = cdf_u - u  # Σ_{a < c} u_a
        g_v, g_u = grad * v, grad * u
        cdf_gv, cdf_gu = g_v.cumsum(-1), g_u.cumsum(-1)
    if "max" in ops:  # u cdf_v + v below_u
        adjoints["max"] = (grad * cdf_v + cdf_gv[:, -1:] - cdf_gv, grad * below_u + cdf_gu[:, -1:] - cdf_gu + g_u)
    if "min" in ops:  # u (Σv − cdf_v + v) + v (Σu − cdf_u)
        adjoints["min"] = (grad * (sum_v - cdf_v + v) + cdf_gv - g_v, grad * (sum_u - cdf_u) + cdf_gu)
    # Boolean ops: ⟨g, result⟩ = (g_1 − g_0) x + g_0 Σu Σv, so D = (g_1 − g_0) ∂x/∂u + g_0 Σv (E alike).
    on_one, on_zero = grad[:, 1:2] - grad[:, :1], grad[:, :1]  # (batch, 1)
    base_u, base_v = on_zero * sum_v, on_zero * sum_u
    first = torch.zeros(n, dtype=u.dtype, device=u.device)
    first[0] = 1  # [value = 0]
    x_partials = {
        "eq": lambda: (v, u),  # Σ u v
        "lt": lambda: (sum_v - cdf_v, below_u),  # Σ_b v_b Σ_{a < b} u_a
        "and": lambda: ((sum_v - v[:, :1]) * (1 - first), (sum_u - u[:, :1]) * (1 - first)),  # (Σu − u_0)(Σv − v_0)
        "or": lambda: (sum_v - first * v[:, :1], sum_u - first * u[:, :1]),  # Σu Σv − u_0 v_0
        "not": lambda: (first * sum_v, u[:, :1].expand_as(v)),  # u_0 Σv
    }
    for op, partials in x_partials.items():
        if op in ops:
            x_u, x_v = partials()
            adjoints[op] = (on_one * x_u + base_u, on_one * x_v + base_v)
    return adjoints


def dense_alu_table(n: int, ops=ALU_OPS, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The literal one-hot table of eq. 7 / eq. 11, ``T[op, a, b, c] = [op(a, b) = c]``: (|ops|, n, n, n).

    |ops|·n³ entries — a baseline for tests and benchmarks, not for use at scale."""
    index = torch.stack([alu_index_table(op, n) for op in ops])  # (|ops|, n, n)
    return torch.zeros(len(ops), n, n, n, dtype=dtype).scatter_(-1, index[..., None], 1)


def dense_alu(
    table: torch.Tensor, op_probs: torch.Tensor, u: torch.Tensor, v: torch.Tensor, form: str = "einsum"
) -> torch.Tensor:
    """Eq. 7 against the dense table (|A|, n, n, n): the baselines `TableALU` is measured and tested against.

    form="einsum": ``torch.einsum('ijkl,bi,bj,bk->bl')`` contracted in the written order, op first — the
        literal formula, with a (batch, n, n, n) intermediate.
    form="matmul": the best dense order — the outer product u ⊗ v (batch, n²) times each op's slice of the
        table viewed as (n², n), then weighted by op_probs (no copy of the table).
    """
    num_ops, n = table.shape[0], table.shape[-1]
    batch_shape = torch.broadcast_shapes(op_probs.shape[:-1], u.shape[:-1], v.shape[:-1])
    f = op_probs.expand(*batch_shape, num_ops).reshape(-1, num_ops)  # (batch, |A|)
    u = u.expand(*batch_shape, n).reshape(-1, n)  # (batch, n)
    v = v.expand(*batch_shape, n).reshape(-1, n)
    if form == "einsum":
        with torch.backends.opt_einsum.flags(enabled=False):  # keep the written (op-first) order
            out = torch.einsum("ijkl,bi,bj,bk->bl", table, f, u, v)
    elif form == "matmul":
        outer = (u[:, :, None] * v[:, None, :]).reshape(-1, n * n)  # (batch, n²)
        results = torch.stack([outer @ table[i].view(n * n, n) for i in range(num_ops)], 1)  # (batch, |A|, n)
        out = torch.einsum("bkn,bk->bn", results, f)
    else:
        raise ValueError(f"form must be 'einsum' or 'matmul', got {form!r}")
    return out.reshape(*batch_shape, n)
