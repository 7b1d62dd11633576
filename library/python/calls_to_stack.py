"""Calls → the machine's calling convention, with a call stack in memory (docs/PYTHON.md, "Calls").

* Arguments are copied into r1, r2, … (the lengths of list arguments in their places, then their base
  addresses), the machine `call` pushes the return address on the return-stack registers, the result comes
  back in r0.
* Every value the caller still needs after a call is pushed on the call stack in memory before it and popped
  after it (the callee may use every register), so a recursive function keeps one frame per level.
* The return-stack registers hold `call_depth` addresses. When calls may nest deeper (recursion, or a chain of
  calls longer than the stack), every function that calls saves its own return address on the call stack at
  its entry and puts it back into the top register before each `ret`. At its entry it also empties the return
  stack (every register "no caller"): each address on it is saved in memory by then, and a `call` whose
  bottom entry holds a caller would overflow the return stack.

The call stack grows down from the last memory cell; `sp` (a register of its own) is the next free cell.
"""

from __future__ import annotations

from .ast_to_ir import FunctionIR, Source
from .ir import Ins, Reg, liveness, phys


def call_graph(functions: dict[str, FunctionIR], entry: str) -> dict[str, list[str]]:
    """The functions reachable from `entry` and whom each calls (each callee once, in call order)."""
    graph: dict[str, list[str]] = {}
    pending = [entry]
    while pending:
        name = pending.pop()
        if name in graph:
            continue
        graph[name] = list(dict.fromkeys(callee for callee, _ in functions[name].calls))
        pending.extend(graph[name])
    return graph


def _cycle(graph: dict[str, list[str]], entry: str) -> list[str] | None:
    """A chain of calls from `entry` that comes back to a function already on it, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for callee in graph[name]:
            if state.get(callee) == 1:
                return path[path.index(callee) :] + [callee]
            if callee not in state:
                found = visit(callee)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    return visit(entry)


def _longest_chain(graph: dict[str, list[str]], name: str) -> int:
    """Calls nested below `name` at most (the graph has no cycle)."""
    return max((1 + _longest_chain(graph, callee) for callee in graph[name]), default=0)


def saves_return_addresses(graph: dict[str, list[str]], entry: str, call_depth: int) -> bool:
    """Whether calls may nest deeper than the return stack holds (one entry is left to the entry's caller)."""
    return _cycle(graph, entry) is not None or _longest_chain(graph, entry) + 1 > call_depth


def expand_calls(
    function: FunctionIR, sp: Reg, save_return: bool, return_stack: list[Reg], no_caller: int
) -> tuple[list[Ins], dict[str, int]]:
    """The function's code with every pseudo-call expanded; also the cells each call site pushes, by callee
    (the most over its sites). `return_stack`: the return-stack registers, the top (`always`) last."""
    always = return_stack[-1]
    live_out = liveness(function.code)
    code: list[Ins] = []
    pushes: dict[str, int] = {}
    for index, ins in enumerate(function.code):
        if ins.op == "call":
            saved = sorted((reg for reg in live_out[index] - {ins.result} if not reg.physical), key=lambda r: r.index)
            pushes[ins.target] = max(pushes.get(ins.target, 0), len(saved))
            weight = ins.weight
            for reg in saved:
                code.append(Ins("write", a=sp, b=reg, weight=weight))
                code.append(Ins("dec", a=sp, out=sp, weight=weight))
            for position, arg in enumerate(ins.args, start=1):
                code.append(Ins("copy", a=arg, out=phys(position), weight=weight))
            arguments = tuple(phys(position) for position in range(1, len(ins.args) + 1))
            # The machine call writes r0 (the result) and may change every other register, which no value
            # still needed holds now.
            code.append(Ins("call", target=f"{ins.target}.start", args=arguments, result=phys(0), weight=weight))
            for reg in reversed(saved):
                code.append(Ins("inc", a=sp, out=sp, weight=weight))
                code.append(Ins("read", a=sp, out=reg, weight=weight))
            if ins.result is not None:
                code.append(Ins("copy", a=phys(0), out=ins.result, weight=weight))
        elif ins.op == "ret" and save_return and function.calls:
            code.append(Ins("inc", a=sp, out=sp))
            code.append(Ins("read", a=sp, out=always))
            code.append(ins)
        else:
            code.append(ins)
            if save_return and function.calls and ins.op == "label" and index == 0:
                code.append(Ins("write", a=sp, b=always))
                code.append(Ins("dec", a=sp, out=sp))
                code += [Ins("set", imm=no_caller, out=reg) for reg in return_stack]
    return code, pushes


def stack_cells(
    source: Source,
    functions: dict[str, FunctionIR],
    graph: dict[str, list[str]],
    pushes: dict[str, dict[str, int]],
    entry: str,
    save_return: bool,
    max_recursion: int,
) -> int:
    """The memory cells the call stack needs: along every chain of calls, the return addresses saved and the
    values pushed at each call; every function on a cycle counts `max_recursion` times."""
    own = {name: int(save_return and bool(graph[name])) for name in graph}
    recursive = set()
    cycle = _cycle(graph, entry)
    if cycle is not None:
        # Every function that can reach itself is recursive.
        for name in graph:
            seen, pending = set(), list(graph[name])
            while pending:
                callee = pending.pop()
                if callee == name:
                    recursive.add(name)
                    break
                if callee not in seen:
                    seen.add(callee)
                    pending.extend(graph[callee])
    level = sum(own[name] + max(pushes[name].values(), default=0) for name in recursive)
    memo: dict[str, int] = {}

    def need(name: str, path: frozenset[str]) -> int:
        if name in recursive and name in path:
            return 0  # counted once per level below
        if name in memo and name not in recursive:
            return memo[name]
        inner = path | {name}
        total = own[name] + max((pushes[name][callee] + need(callee, inner) for callee in graph[name]), default=0)
        if name not in recursive:
            memo[name] = total
        return total

    cells = need(entry, frozenset()) + level * max_recursion
    if recursive and cells > source.memory_size:
        fn = functions[sorted(recursive)[0]]
        site = next((node for callee, node in fn.calls if callee in recursive), fn.node)
        chain = " -> ".join(cycle or [])
        raise source.error(
            site,
            f"unbounded recursion depth exceeds memory: the recursion {chain} keeps {level} cells on the call "
            f"stack a level, {max_recursion} levels (max_recursion) need {cells} cells but memory_size is "
            f"{source.memory_size}",
        )
    if cells > source.memory_size:
        raise source.error(
            functions[entry].node, f"the call stack needs {cells} memory cells but memory_size is {source.memory_size}"
        )
    return cells


def entry_stub(sp: Reg, top: int) -> list[Ins]:
    """The program's first instruction: the call stack starts at the last memory cell."""
    return [Ins("set", imm=top, out=sp)]
