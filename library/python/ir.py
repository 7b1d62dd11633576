"""The intermediate representation between Python and assembly: machine instructions over virtual registers.

An `Ins` is one machine instruction (`dcomp_isa` op names and operand roles) whose registers are `Reg`s: virtual
registers (`v12`, one per Python variable or temporary, unlimited) until register allocation, physical ones
(`r3`) after it. Three pseudo-instructions exist only here:

* `label`: names the next instruction (a basic-block boundary);
* `call` with `args` and `result`: a call before the calling convention is applied (ast_to_ir emits it,
  calls_to_stack expands it into pushes, argument copies, the machine `call`, pops and a copy of r0);
* `loop`: `dec a | jump a target` in one line, i.e. jump while the counter *before* the decrement is nonzero.

`CompileError` is the one error every pass raises, located at a Python source line and column.
"""

from __future__ import annotations

import dataclasses

from dcomp_isa import OPS_BY_NAME

from ..program import SourceError


class CompileError(SourceError):
    """Python source outside the compilable subset, located at `source_name:line:column` (1-based column)."""

    def __init__(self, message: str, *, line: int, column: int, source_name: str = "<python>"):
        super().__init__(message, line=line, column=column, source_name=source_name)


@dataclasses.dataclass(frozen=True)
class Reg:
    """A register: virtual (`index` numbers it within a function) or physical (`index` is the machine register)."""

    index: int
    physical: bool = False

    def __str__(self) -> str:
        return f"r{self.index}" if self.physical else f"v{self.index}"


def phys(index: int) -> Reg:
    return Reg(index, physical=True)


@dataclasses.dataclass(frozen=True)
class Ins:
    """One IR instruction; `a`, `b` are read, `out` is written, `imm` is a value, `target` a label name.

    `weight` is 10 ** (loop nesting depth): how often the instruction runs relative to its function's entry,
    which register allocation uses to choose what to spill."""

    op: str
    a: Reg | None = None
    b: Reg | None = None
    out: Reg | None = None
    imm: int = 0
    target: str = ""
    args: tuple[Reg, ...] = ()
    result: Reg | None = None
    weight: int = 1
    group: tuple[Ins, ...] = ()

    @property
    def uses(self) -> tuple[Reg, ...]:
        if self.op == "parallel":
            return tuple(dict.fromkeys(reg for ins in self.group for reg in ins.uses))
        if self.op == "call":
            return self.args
        return tuple(r for r in (self.a, self.b) if r is not None)

    @property
    def defs(self) -> tuple[Reg, ...]:
        if self.op == "parallel":
            return tuple(reg for ins in self.group for reg in ins.defs)
        if self.op == "call":
            return (self.result,) if self.result is not None else ()
        written = self.a if self.op == "loop" else self.out
        return (written,) if written is not None else ()

    @property
    def is_control(self) -> bool:
        return self.op in ("jump", "loop", "ret", "call")

    @property
    def falls_through(self) -> bool:
        """False for `ret` and for an unconditional jump (`always`: its register is known nonzero)."""
        return self.op != "ret" and not (self.op == "jump" and self.imm == ALWAYS)

    def replace(self, mapping: dict[Reg, Reg]) -> Ins:
        """This instruction with registers renamed by `mapping` (unmapped registers stay)."""

        def rename(reg):
            return mapping.get(reg, reg) if reg is not None else None

        return dataclasses.replace(
            self,
            a=rename(self.a),
            b=rename(self.b),
            out=rename(self.out),
            args=tuple(rename(r) for r in self.args),
            result=rename(self.result),
            group=tuple(ins.replace(mapping) for ins in self.group),
        )

    @property
    def lanes(self) -> int:
        return 2 if self.op == "loop" else max(1, len(self.group))

    @property
    def reads_memory(self) -> bool:
        return self.op == "read" or any(ins.op == "read" for ins in self.group)

    def assembly(self) -> str:
        """The instruction's assembly lanes (physical registers only)."""
        if self.op == "loop":
            return f"dec {self.a} {self.a} | jump {self.a} {self.target}"
        if self.op == "parallel":
            return " | ".join(ins.assembly() for ins in self.group)
        spec = OPS_BY_NAME[self.op]
        operands = []
        for letter in spec.operands:
            if letter == "a":
                operands.append(str(self.a))
            elif letter == "b":
                operands.append(str(self.b))
            elif letter == "o":
                operands.append(str(self.out))
            elif letter == "i":
                operands.append(str(self.imm))
            else:
                operands.append(self.target)
        return " ".join([self.op, *operands])


# `imm` of a `jump` whose register is the top of the return stack: never zero (it holds a return address
# >= 1 or n - 1), so the jump is unconditional and the next instruction is only reached by a label.
ALWAYS = 1


def label(name: str) -> Ins:
    return Ins("label", target=name)


def liveness(code: list[Ins]) -> list[set[Reg]]:
    """`live_out[i]`: the registers whose value instruction i leaves for a later read (backward dataflow)."""
    labels = {ins.target: i for i, ins in enumerate(code) if ins.op == "label"}
    successors = []
    for i, ins in enumerate(code):
        following = [i + 1] if ins.falls_through and i + 1 < len(code) else []
        if ins.op in ("jump", "loop"):
            following.append(labels[ins.target])
        successors.append(following)
    live_in: list[set[Reg]] = [set() for _ in code]
    live_out: list[set[Reg]] = [set() for _ in code]
    changed = True
    while changed:
        changed = False
        for i in range(len(code) - 1, -1, -1):
            out = set().union(*(live_in[j] for j in successors[i])) if successors[i] else set()
            new_in = (out - set(code[i].defs)) | set(code[i].uses)
            if out != live_out[i] or new_in != live_in[i]:
                live_out[i], live_in[i] = out, new_in
                changed = True
    return live_out


_PURE = frozenset(
    {"set", "inc", "dec", "add", "sub", "mul", "div", "mod", "max", "min", "eq", "lt", "and", "or", "not"}
)
_COMMUTATIVE = frozenset({"add", "mul", "max", "min", "eq", "and", "or"})


def reuse_values(code: list[Ins]) -> list[Ins]:
    """Local value numbering: an ALU result or constant already in a virtual register since the last label
    (`xs[i]` and `xs[i] = ...` both need base + i) is reused instead of recomputed. Operands are looked through
    copies, so `t = i + 1` and a later `i + 1` name one value. When both registers are written only there,
    the later one is renamed to the earlier (no instruction at all); otherwise it becomes a copy, except a
    constant, which is cheaper to set again than to copy (a copy waits for the line that set the original)."""
    writes: dict[Reg, int] = {}
    for ins in code:
        for reg in ins.defs:
            writes[reg] = writes.get(reg, 0) + 1
    available: dict[tuple, Reg] = {}
    copies: dict[Reg, Reg] = {}  # virtual register -> the register it is a copy of
    renamed: dict[Reg, Reg] = {}
    result = []
    for ins in code:
        ins = ins.replace(renamed) if renamed else ins
        if ins.op == "label":
            available.clear()
            copies.clear()
        key = None
        out = ins.defs[0] if ins.defs else None
        if ins.op in _PURE and out is not None and not any(reg.physical for reg in (*ins.uses, out)):
            operands = tuple(copies.get(reg, reg) if reg is not None else None for reg in (ins.a, ins.b))
            if ins.op in _COMMUTATIVE:
                operands = tuple(sorted(operands, key=lambda reg: reg.index if reg else -1))
            key = (ins.op, *operands, ins.imm)
            if key in available:
                earlier = available[key]
                if writes[out] == 1 and writes[earlier] == 1:
                    renamed[out] = earlier
                    continue
                if ins.op != "set":
                    ins = Ins("copy", a=earlier, out=out, weight=ins.weight)
        for written in ins.defs:
            for known, value in list(available.items()):
                if value == written or written in known[1:3]:
                    del available[known]
            for copy, original in list(copies.items()):
                if written in (copy, original):
                    del copies[copy]
        if ins.op == "copy" and ins.a is not None and out is not None:
            if not ins.a.physical and not out.physical and ins.a != out:
                copies[out] = copies.get(ins.a, ins.a)
        elif key is not None and out is not None and out not in ins.uses:
            available[key] = out
        result.append(ins)
    return result


def remove_dead(code: list[Ins]) -> list[Ins]:
    """Drops computations whose result nothing reads (e.g. the counter of `for _ in range(k)`)."""
    while True:
        live_out = liveness(code)
        kept = [
            ins
            for ins, live in zip(code, live_out)
            if not (ins.op in _PURE or ins.op in ("copy", "read")) or any(reg in live for reg in ins.defs)
        ]
        if len(kept) == len(code):
            return code
        code = kept
