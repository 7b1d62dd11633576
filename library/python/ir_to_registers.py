"""Virtual registers → machine registers: liveness-based graph colouring (Chaitin–Briggs), with spills.

Two virtual registers interfere when one is written while the other holds a value still to be read; physical
registers (r0 for results, r1… for arguments) take part as pre-coloured nodes. Copies are coalesced by
preference: a register copied from or into another takes the other's colour when it is free. When the
colouring needs more registers than the machine has, the cheapest value (uses weighted by 10 per loop level,
divided by its interferences) moves to a memory cell of its own: every read loads it into a short-lived
register first (`set addr t; read t v`) and every write stores it after (`set addr t; write t v`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable

from .ir import Ins, Reg, liveness, phys


@dataclasses.dataclass
class _Graph:
    edges: dict[Reg, set[Reg]]  # virtual → interfering virtual registers
    forbidden: dict[Reg, set[int]]  # virtual → interfering physical register indices
    partners: dict[Reg, list[Reg]]  # virtual → registers it is copied from or into
    cost: dict[Reg, int]  # virtual → weighted reads and writes


def _interference(code: list[Ins]) -> _Graph:
    live_out = liveness(code)
    graph = _Graph(defaultdict(set), defaultdict(set), defaultdict(list), defaultdict(int))

    def interfere(x: Reg, y: Reg) -> None:
        if x == y or (x.physical and y.physical):
            return
        if x.physical:
            graph.forbidden[y].add(x.index)
        elif y.physical:
            graph.forbidden[x].add(y.index)
        else:
            graph.edges[x].add(y)
            graph.edges[y].add(x)

    for ins, live in zip(code, live_out):
        for reg in (*ins.uses, *ins.defs):
            if not reg.physical:
                graph.cost[reg] += ins.weight
                graph.edges.setdefault(reg, set())
        copied = ins.a if ins.op == "copy" else None
        for written in ins.defs:
            for other in live:
                if other != copied:
                    interfere(written, other)
        for first in ins.defs:  # the lanes of one line may not write one register
            for second in ins.defs:
                interfere(first, second)
        members = ins.group or (ins,)
        for member in members:
            if member.op == "copy" and member.a is not None and member.out is not None:
                graph.partners[member.out].append(member.a)
                graph.partners[member.a].append(member.out)
    return graph


def _colour(graph: _Graph, pool: list[int], unspillable: set[Reg]) -> tuple[dict[Reg, int], list[Reg]]:
    """Simplify / select: returns the colouring and the registers that found no colour."""
    k = len(pool)
    pool_set = set(pool)
    degree = {v: len(graph.edges[v]) + len(graph.forbidden[v] & pool_set) for v in graph.edges}
    remaining = set(graph.edges)
    stack: list[Reg] = []
    while remaining:
        easy = [v for v in remaining if degree[v] < k]
        if easy:
            chosen = min(easy, key=lambda v: v.index)
        else:
            spillable = [v for v in remaining if v not in unspillable] or list(remaining)
            chosen = min(spillable, key=lambda v: (graph.cost[v] / (degree[v] + 1), v.index))
        remaining.discard(chosen)
        stack.append(chosen)
        for neighbour in graph.edges[chosen]:
            if neighbour in remaining:
                degree[neighbour] -= 1
    colours: dict[Reg, int] = {}
    failed = []
    for v in reversed(stack):
        taken = set(graph.forbidden[v]) | {colours[u] for u in graph.edges[v] if u in colours}
        free = [c for c in pool if c not in taken]
        if not free:
            failed.append(v)
            continue
        preferred = [p.index if p.physical else colours.get(p) for p in graph.partners[v]]
        # Leave alone the colours that neighbours still to be coloured are copied from or into.
        wanted = {
            p.index if p.physical else colours.get(p, -1)
            for u in graph.edges[v]
            if u not in colours
            for p in graph.partners[u]
        }
        choice = next((c for c in preferred if c in free), None)
        colours[v] = choice if choice is not None else next((c for c in free if c not in wanted), free[0])
    return colours, failed


class OutOfRegisters(Exception):
    """Even the registers that may not spill (loop counters and spill temporaries) do not fit."""


def allocate(code: list[Ins], pool: list[int], num_vregs: int, spill_address: Callable[[], int]) -> list[Ins]:
    """`code` with every virtual register replaced by one of `pool`'s; spills call `spill_address()` for a cell."""
    unspillable: set[Reg] = {reg for ins in code if ins.op == "loop" for reg in ins.defs}
    while True:
        graph = _interference(code)
        colours, failed = _colour(graph, pool, unspillable)
        if not failed:
            renamed = [ins.replace({v: phys(c) for v, c in colours.items()}) for ins in code]
            return [ins for ins in renamed if not (ins.op == "copy" and ins.a == ins.out)]
        spilled = [v for v in failed if v not in unspillable]
        if not spilled:
            raise OutOfRegisters(failed)
        slots = {v: spill_address() for v in spilled}
        code, num_vregs = _spill(code, slots, num_vregs, unspillable)


def _spill(code: list[Ins], slots: dict[Reg, int], num_vregs: int, unspillable: set[Reg]) -> tuple[list[Ins], int]:
    rewritten: list[Ins] = []

    def temp() -> Reg:
        nonlocal num_vregs
        num_vregs += 1
        reg = Reg(num_vregs - 1)
        unspillable.add(reg)
        return reg

    for ins in code:
        before, after, mapping = [], [], {}
        for reg in dict.fromkeys(ins.uses):
            if reg in slots:
                address, value = temp(), temp()
                before += [Ins("set", imm=slots[reg], out=address, weight=ins.weight)]
                before += [Ins("read", a=address, out=value, weight=ins.weight)]
                mapping[reg] = value
        defs_mapping: dict[Reg | None, Reg] = {}
        for reg in ins.defs:
            if reg in slots:
                address, value = temp(), temp()
                defs_mapping[reg] = value
                after += [Ins("set", imm=slots[reg], out=address, weight=ins.weight)]
                after += [Ins("write", a=address, b=value, weight=ins.weight)]
        renamed = ins.replace(mapping)
        if defs_mapping:  # a register both read and written (inc v v) reads the loaded value, writes the new one
            renamed = dataclasses.replace(
                renamed,
                out=defs_mapping.get(ins.out, renamed.out),
                result=defs_mapping.get(ins.result, renamed.result) if ins.result else None,
                group=tuple(
                    dataclasses.replace(member, out=defs_mapping.get(original.out, member.out))
                    for member, original in zip(renamed.group, ins.group)
                ),
            )
        rewritten += [*before, renamed, *after]
    return rewritten, num_vregs
