"""IR over machine registers → assembly text, packing independent instructions into the lanes of one line.

Every lane of a line reads the state from before the line (docs/ISA.md), so inside a basic block an
instruction may share the line of an earlier one unless it reads a register or memory that one writes, or
writes a register it also writes; it may share the line of an instruction that reads what it overwrites, and
two memory writes may share a line (their lanes apply in program order, so the later one wins, as in Python).
List scheduling places each instruction on the earliest line these rules allow; the block's jump, `loop`,
`call` or `ret` goes on its last line.
"""

from __future__ import annotations

from .ir import Ins


def _tidy(code: list[Ins]) -> list[Ins]:
    """Drops unreachable instructions, jumps to the very next line and labels nothing jumps to."""
    changed = True
    while changed:
        changed = False
        kept: list[Ins] = []
        reachable = True
        for ins in code:
            if ins.op == "label":
                reachable = True
            if reachable:
                kept.append(ins)
            if ins.op != "label" and not ins.falls_through:
                reachable = False
        targets = {ins.target for ins in kept if ins.op in ("jump", "loop", "call")}
        tidy = []
        for index, ins in enumerate(kept):
            if ins.op == "label" and ins.target not in targets:
                changed = True
                continue
            if ins.op == "jump" and _next_labels(kept, index) & {ins.target}:
                changed = True
                continue
            tidy.append(ins)
        changed = changed or len(kept) != len(code)
        code = tidy
    return code


def _next_labels(code: list[Ins], index: int) -> set[str]:
    """The labels that name the line right after instruction `index`."""
    names = set()
    for ins in code[index + 1 :]:
        if ins.op != "label":
            break
        names.add(ins.target)
    return names


def _registers(ins: Ins, return_stack: frozenset) -> tuple[set, set]:
    """What the line of `ins` must see written before it. A call's arguments and a ret's result are read by
    the callee and caller after the line's lanes have written them, so they may share the line; a write to a
    return-stack register may not (the assembler's rule: the line's call or ret rewrites the stack)."""
    if ins.op == "call":
        return set(return_stack), set(ins.defs)
    if ins.op == "ret":
        return {ins.b, *return_stack}, set()
    return set(ins.uses), set(ins.defs)


def _schedule_block(block: list[Ins], max_lanes: int, return_stack: frozenset) -> list[list[Ins]]:
    lines: list[list[Ins]] = []
    placed: list[tuple[int, set, set, bool, bool]] = []  # (line, reads, writes, reads memory, writes memory)
    for ins in block:
        reads, writes = _registers(ins, return_stack)
        reads_memory, writes_memory = ins.reads_memory, ins.op == "write"
        earliest = 0
        for line, earlier_reads, earlier_writes, earlier_reads_memory, earlier_writes_memory in placed:
            # Writes to memory apply in lane order, so two may share a line; a read must see the write.
            memory_after_write = earlier_writes_memory and reads_memory
            if reads & earlier_writes or writes & earlier_writes or memory_after_write:
                earliest = max(earliest, line + 1)
            elif writes & earlier_reads or ((earlier_reads_memory or earlier_writes_memory) and writes_memory):
                earliest = max(earliest, line)
        if ins.is_control:
            earliest = max(earliest, len(lines) - 1, 0)
        while earliest < len(lines) and sum(x.lanes for x in lines[earliest]) + ins.lanes > max_lanes:
            earliest += 1
        if earliest == len(lines):
            lines.append([])
        lines[earliest].append(ins)
        placed.append((earliest, reads, writes, reads_memory, writes_memory))
    return lines


def to_assembly(code: list[Ins], max_lanes: int, return_stack: frozenset) -> str:
    """Assembly text for a whole program's IR (physical registers only; `return_stack`: the return-stack
    registers)."""
    out: list[str] = []
    block: list[Ins] = []

    def flush() -> None:
        for line in _schedule_block(block, max_lanes, return_stack):
            out.append("    " + " | ".join(ins.assembly() for ins in line))
        block.clear()

    for ins in _tidy(code):
        if ins.op == "label":
            flush()
            out.append(f"{ins.target}:")
            continue
        block.append(ins)
        if ins.is_control:
            flush()
    flush()
    return "\n".join(out) + "\n"
