"""Assembler: the paper's assembly text to a `Program`, and `format_program` back to canonical text.

    inc  2 2                  ; operands follow dcomp_isa: inputs first, output register last
    fib_loop:                 # a label names the address of the next instruction line
        write 3 2
        add  r1 r2 r2         ; registers as rK or bare K
        min 1 2 1 | max 1 2 2 ; parallel lanes, all reading the state from before the line
        jump 4 fib_loop       ; a line address: a label or an integer

docs/ISA.md is the full reference for the syntax and the error list. Every mistake in the source raises
`AssemblyError` with the 1-based line and column of the offending token; echoed tokens are escaped and cut
short (`show`), and text that is not UTF-8 assembly (UTF-16, undecodable bytes, control characters) is refused
at its position.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import dcomp_isa

from .program import Instruction, Program, SourceError, Symbol

# Tokens: a lane separator, a label definition ("name:"), or any other run of non-space characters.
_TOKEN = re.compile(r"\||[^\s|:]*:|[^\s|:]+")
_NUMBER = re.compile(r"[0-9]+")
_NEGATIVE = re.compile(r"-[0-9]+")
_REGISTER = re.compile(r"[rR]?([0-9]+)")
_NAMED_REGISTER = re.compile(r"[rR][0-9]+")
LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# A well-formed operand glued to punctuation ("r3," or "2)"): reported as trailing junk at the punctuation.
_GLUED_JUNK = re.compile(r"([rR]?[0-9]+|[A-Za-z_][A-Za-z0-9_.]*)([^A-Za-z0-9_.].*)")

_OPS = dcomp_isa.OPS_BY_NAME
_OPERAND_NAMES = {"a": "a", "b": "b", "o": "out", "i": "imm", "l": "target"}
_CONTROL_OPS = frozenset(dcomp_isa.CONTROL_OPS)
_STACK_OPS = frozenset({"call", "ret"})
# Echoed source text is cut to this many characters.
_SHOW_CHARS = 40
# Digit strings longer than this are out of any machine's range (64-bit values have at most 19 digits).
_MAX_DIGITS = 20
_BOMS = {b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}


class AssemblyError(SourceError):
    """A mistake in assembly source, located at a 1-based `line` and `column` of `source_name`.

    Line and column are 0 when the input is not text at all."""

    def __init__(self, message: str, *, line: int, column: int, source_name: str = "program"):
        super().__init__(message, line=line, column=column, source_name=source_name)


def show(text: str, quote: str = "'") -> str:
    """`text` quoted for an error message: control and invisible characters escaped, cut to a readable length."""
    escaped = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:_SHOW_CHARS])
    more = f"… ({len(text)} characters)" if len(text) > _SHOW_CHARS else ""
    return f"{quote}{escaped}{quote}{more}"


def _digits(text: str) -> int:
    """The value of a decimal digit string; one past any machine's range when it is too long for `int` to be
    worth calling (Python refuses over 4300 digits)."""
    return int(text) if len(text.lstrip("0")) <= _MAX_DIGITS else 10**_MAX_DIGITS


@dataclasses.dataclass(frozen=True)
class _Token:
    text: str
    column: int  # 1-based


def _signature(spec: dcomp_isa.OpSpec) -> str:
    """'add takes 3 operands (a b out)'-style description of an op's operands."""
    count = len(spec.operands)
    if count == 0:
        return f"{spec.name} takes no operands"
    names = " ".join(_OPERAND_NAMES[letter] for letter in spec.operands)
    plural = "operand" if count == 1 else "operands"
    in_place = ", or 1 in place" if spec.name in dcomp_isa.UNARY_ALU_OPS else ""
    return f"{spec.name} takes {count} {plural} ({names}){in_place}"


class _Assembler:
    """One assembly pass over a source text; `run` returns the Program or raises AssemblyError."""

    def __init__(
        self, source_name: str, n: int, num_registers: int, call_depth: int, allow_undefined: bool, bits: int | None
    ):
        self.source_name = source_name
        self.allow_undefined = allow_undefined
        self.symbols: list[Symbol] = []
        # Immediates lie in [low, high): [0, n), or the signed range of `bits` bits (the binary machine), where
        # line addresses are the non-negative values.
        self.low, self.high = (0, n) if bits is None else dcomp_isa.signed_range(bits)
        self.n = self.high
        self.num_registers = num_registers
        self.stack_registers = range(num_registers - call_depth, num_registers)
        self.lines: list[tuple[Instruction, ...]] = []
        self.source_lines: list[int] = []
        self.first_columns: list[int] = []
        self.labels: dict[str, int] = {}
        self.label_lines: dict[str, int] = {}
        # Label operands, resolved once every label is known: (line index, lane, name, line_no, column).
        self.label_refs: list[tuple[int, int, str, int, int]] = []

    def error(self, line_no: int, column: int, message: str) -> AssemblyError:
        return AssemblyError(message, line=line_no, column=column, source_name=self.source_name)

    def run(self, source: str, name: str) -> Program:
        for line_no, text in enumerate(source.removeprefix("\ufeff").split("\n"), start=1):
            self.check_characters(line_no, text)
            self.parse_line(line_no, text)
        if not self.lines:
            raise self.error(1, 1, "empty program: no instructions")
        if len(self.lines) > self.n - 1:
            index = self.n - 1
            raise self.error(
                self.source_lines[index],
                self.first_columns[index],
                f"program too long: {len(self.lines)} lines, at most n - 1 = {self.n - 1} "
                f"(line addresses are values in [0, n) and n - 1 means 'no caller')",
            )
        self.resolve_labels()
        return Program(tuple(self.lines), dict(self.labels), name, tuple(self.source_lines), tuple(self.symbols))

    def check_characters(self, line_no: int, text: str) -> None:
        """Control and invisible characters (NUL, zero-width space, …) are refused where they stand."""
        for column, char in enumerate(text.rstrip("\r"), start=1):
            if not char.isprintable() and char != "\t":
                described = unicodedata.name(char, "a control character")
                raise self.error(line_no, column, f"invalid character U+{ord(char):04X} ({described}) in the source")

    def parse_line(self, line_no: int, text: str) -> None:
        code = re.split(r"[;#]", text.rstrip("\r"), maxsplit=1)[0]
        tokens = [_Token(m.group(), m.start() + 1) for m in _TOKEN.finditer(code)]
        while tokens and tokens[0].text.endswith(":"):
            self.define_label(line_no, tokens.pop(0))
        if not tokens:
            return
        lanes: list[list[_Token]] = [[]]
        for token in tokens:
            if token.text == "|":
                if not lanes[-1]:
                    raise self.error(line_no, token.column, "empty lane: expected an instruction before '|'")
                lanes.append([])
            else:
                lanes[-1].append(token)
        if not lanes[-1]:
            raise self.error(line_no, tokens[-1].column, "empty lane: expected an instruction after '|'")
        parsed = [self.parse_instruction(line_no, lane, lane_index) for lane_index, lane in enumerate(lanes)]
        self.check_lanes(line_no, parsed)
        self.lines.append(tuple(instruction for instruction, _, _ in parsed))
        self.source_lines.append(line_no)
        self.first_columns.append(tokens[0].column)

    def define_label(self, line_no: int, token: _Token) -> None:
        label = token.text[:-1]
        if not LABEL.fullmatch(label) or _NAMED_REGISTER.fullmatch(label) or label.lower() in _OPS:
            raise self.error(
                line_no,
                token.column,
                f"invalid label name {show(label)} (a label is a letter or '_' then letters, digits, '_' or '.', "
                f"and not an op name or a register like r3)",
            )
        if label in self.labels:
            raise self.error(
                line_no,
                token.column,
                f"duplicate label {show(label)} (first defined on line {self.label_lines[label]})",
            )
        self.labels[label] = len(self.lines)
        self.label_lines[label] = line_no

    def parse_instruction(
        self, line_no: int, tokens: list[_Token], lane: int
    ) -> tuple[Instruction, _Token, _Token | None]:
        """Parses one lane: returns the instruction, its op token and its output-register token (if any)."""
        op_token, operands = tokens[0], tokens[1:]
        op = op_token.text.lower()
        if op not in _OPS:
            if op_token.text.endswith(":"):
                raise self.error(line_no, op_token.column, f"label {show(op_token.text)} must start the line")
            raise self.error(
                line_no,
                op_token.column,
                f"unknown op {show(op_token.text)} (expected one of: {', '.join(dcomp_isa.OP_NAMES)})",
            )
        spec = _OPS[op]
        letters = spec.operands
        if op in dcomp_isa.UNARY_ALU_OPS and len(operands) == 1:
            operands = operands * 2  # in place: `inc 3` is `inc 3 3`
        if len(operands) != len(letters):
            at = op_token if len(operands) < len(letters) else operands[len(letters)]
            raise self.error(line_no, at.column, f"{_signature(spec)}, got {len(tokens) - 1}")
        fields = {"a": 0, "b": 0, "out": 0, "imm": 0}
        out_token = None
        for letter, token in zip(letters, operands):
            if token.text.endswith(":"):
                raise self.error(line_no, token.column, f"label {show(token.text)} must start the line")
            if letter in "abo":
                fields[_OPERAND_NAMES[letter]] = self.parse_register(line_no, token)
                if letter == "o":
                    out_token = token
            elif letter == "i":
                fields["imm"] = self.parse_immediate(line_no, token)
            else:
                fields["imm"] = self.parse_address(line_no, token, lane)
        return Instruction(op, **fields), op_token, out_token

    def check_lanes(self, line_no: int, parsed: list[tuple[Instruction, _Token, _Token | None]]) -> None:
        """Line-level rules: one control op per line, no register written twice, return stack left alone."""
        control = [(instruction, token) for instruction, token, _ in parsed if instruction.op in _CONTROL_OPS]
        if len(control) > 1:
            raise self.error(
                line_no,
                control[1][1].column,
                f"at most one control instruction ({', '.join(dcomp_isa.CONTROL_OPS)}) per line: "
                f"'{control[1][0].op}' follows '{control[0][0].op}'",
            )
        stack_op = control[0][0].op if control and control[0][0].op in _STACK_OPS else None
        writers: dict[int, int] = {}
        for lane, (instruction, _, out_token) in enumerate(parsed, start=1):
            if out_token is None:
                continue
            register = instruction.out
            if register in writers:
                raise self.error(
                    line_no, out_token.column, f"lanes {writers[register]} and {lane} both write r{register}"
                )
            writers[register] = lane
            # The line's call/ret rewrites the return stack in the same step; a lane writing it too would race.
            if stack_op and register in self.stack_registers:
                first, last = self.stack_registers.start, self.num_registers - 1
                raise self.error(
                    line_no,
                    out_token.column,
                    f"r{register} is a return-stack register (r{first}..r{last}) "
                    f"and this line's '{stack_op}' rewrites the return stack",
                )

    def parse_register(self, line_no: int, token: _Token) -> int:
        match = _REGISTER.fullmatch(token.text)
        if match is None:
            self.raise_malformed(line_no, token, f"malformed register {show(token.text)} (expected rK or K)")
        index = _digits(match.group(1))
        if index >= self.num_registers:
            raise self.error(
                line_no,
                token.column,
                f"register {show(token.text, quote='')} out of range "
                f"(num_registers = {self.num_registers}: r0..r{self.num_registers - 1})",
            )
        return index

    def parse_immediate(self, line_no: int, token: _Token) -> int:
        if _NAMED_REGISTER.fullmatch(token.text):
            raise self.error(line_no, token.column, f"expected an immediate value, got register {show(token.text)}")
        negative = self.low < 0 and _NEGATIVE.fullmatch(token.text)
        if not (_NUMBER.fullmatch(token.text) or negative):
            self.raise_malformed(
                line_no,
                token,
                f"malformed number {show(token.text)} (expected a decimal integer in [{self.low}, {self.high}))",
            )
        value = -_digits(token.text[1:]) if negative else _digits(token.text)
        if not self.low <= value < self.high:
            raise self.error(
                line_no,
                token.column,
                f"immediate {show(token.text, quote='')} out of range [{self.low}, {self.high})",
            )
        return value

    def parse_address(self, line_no: int, token: _Token, lane: int) -> int:
        """A line address: an integer now, or a label resolved once every label is known (returns 0 then)."""
        if _NUMBER.fullmatch(token.text):
            value = _digits(token.text)
            if value >= self.n:
                raise self.error(
                    line_no, token.column, f"line address {show(token.text, quote='')} out of range [0, {self.n})"
                )
            return value
        if _NAMED_REGISTER.fullmatch(token.text):
            raise self.error(
                line_no, token.column, f"expected a label or line address, got register {show(token.text)}"
            )
        if LABEL.fullmatch(token.text):
            self.label_refs.append((len(self.lines), lane, token.text, line_no, token.column))
            return 0
        self.raise_malformed(
            line_no,
            token,
            f"malformed line address {show(token.text)} (expected a label or an integer in [0, {self.n}))",
        )

    def raise_malformed(self, line_no: int, token: _Token, message: str) -> NoReturn:
        """Raises the most specific error for a bad operand token: negative, glued junk, else `message`."""
        if _NEGATIVE.fullmatch(token.text):
            raise self.error(line_no, token.column, f"negative number {show(token.text)}: values are in [0, {self.n})")
        glued = _GLUED_JUNK.fullmatch(token.text)
        if glued:
            column = token.column + glued.start(2)
            raise self.error(
                line_no,
                column,
                f"trailing junk {show(glued.group(2))} after {show(glued.group(1))} (operands are separated by spaces)",
            )
        raise self.error(line_no, token.column, message)

    def resolve_labels(self) -> None:
        for index, lane, label, line_no, column in self.label_refs:
            if label not in self.labels and self.allow_undefined:
                self.symbols.append(Symbol(label, index, lane, f"{self.source_name}:{line_no}:{column}"))
                continue
            if label not in self.labels:
                raise self.error(line_no, column, f"undefined label {show(label)}")
            line = list(self.lines[index])
            line[lane] = dataclasses.replace(line[lane], imm=self.labels[label])
            self.lines[index] = tuple(line)


def assemble(
    source: str,
    name: str = "program",
    *,
    n: int = 128,
    num_registers: int = 16,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
    source_name: str | None = None,
    allow_undefined: bool = False,
    bits: int | None = None,
) -> Program:
    """Assembles `source` into a Program for a machine with `n` values and `num_registers` registers.

    `call_depth` names the return-stack registers (the top `call_depth`), which a lane may not write on a line
    whose `call`/`ret` rewrites them. Errors name `source_name` (default: `name`). With `allow_undefined`, a
    jump/call target naming no label of this source is not an error but one of the Program's `symbols`, for
    the linker (`stdlib.link`) to resolve. With `bits` (the binary machine; `n` is then ignored) immediates are
    signed values of that many bits, negative ones included."""
    if bits is not None and not dcomp_isa.MIN_BITS <= bits <= dcomp_isa.MAX_BITS:
        raise ValueError(f"bits must be in [{dcomp_isa.MIN_BITS}, {dcomp_isa.MAX_BITS}], got {bits}")
    if n < 2 or num_registers < 1 or not 1 <= call_depth <= num_registers:
        raise ValueError(
            f"need n >= 2, num_registers >= 1 and 1 <= call_depth <= num_registers; "
            f"got n={n}, num_registers={num_registers}, call_depth={call_depth}"
        )
    source_name = name if source_name is None else source_name
    if not isinstance(source, str):
        hint = " (decode bytes first, e.g. source.decode('utf-8'))" if isinstance(source, (bytes, bytearray)) else ""
        raise AssemblyError(
            f"expected assembly source text (str), got {type(source).__name__}{hint}",
            line=0,
            column=0,
            source_name=source_name,
        )
    return _Assembler(source_name, n, num_registers, call_depth, allow_undefined, bits).run(source, name)


def decode_source(data: bytes, source_name: str) -> str:
    """The text of an assembly file's bytes: UTF-8, with or without a byte-order mark. UTF-16 and bytes that
    are not UTF-8 raise `AssemblyError` at the line and column where they stand."""
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            raise AssemblyError(f"the file is {encoding}: save it as UTF-8", line=1, column=1, source_name=source_name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start].decode("utf-8")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        raise AssemblyError(
            f"not UTF-8 text: byte 0x{data[error.start]:02x} cannot start or continue a character",
            line=line,
            column=column,
            source_name=source_name,
        ) from None


def assemble_file(path: str | Path, **kwargs) -> Program:
    """Assembles a `.asm` file; the Program is named after the file's stem and errors name the path."""
    path = Path(path)
    kwargs.setdefault("source_name", str(path))
    source = decode_source(path.read_bytes(), kwargs["source_name"])
    return assemble(source, kwargs.pop("name", path.stem), **kwargs)


def _format_instruction(instruction: Instruction, labels_at: dict[int, list[str]]) -> str:
    spec = _OPS.get(instruction.op)
    if spec is None:
        raise ValueError(f"unknown op {instruction.op!r} in program")
    operands = []
    for letter in spec.operands:
        if letter in "abo":
            operands.append(f"r{getattr(instruction, _OPERAND_NAMES[letter])}")
        elif letter == "l" and labels_at.get(instruction.imm):
            operands.append(labels_at[instruction.imm][0])
        else:
            operands.append(str(instruction.imm))
    return f"{spec.name:<5} {' '.join(operands)}" if operands else spec.name


def format_program(program: Program, *, comments: Sequence[str] = (), title: str | None = None) -> str:
    """Canonical assembly text: `assemble(format_program(p))` has p's lines and labels.

    Labels sit on their own lines; registers are written rK; jump/call targets use a label where one names
    the address. `comments[i]` (if non-empty) ends line i as `; comment`; `title` is a first comment line."""
    labels_at: dict[int, list[str]] = defaultdict(list)
    for label, address in program.labels.items():
        if not 0 <= address <= len(program.lines):
            raise ValueError(f"label {label!r} points at line {address}, outside 0..{len(program.lines)}")
        labels_at[address].append(label)
    indent = "    " if program.labels else ""
    text = [] if title is None else [f"; {title}"]
    for address, line in enumerate(program.lines):
        if not line:
            raise ValueError(f"line {address} of program {program.name!r} has no instructions")
        text.extend(f"{label}:" for label in labels_at.get(address, ()))
        comment = comments[address] if address < len(comments) else ""
        text.append(
            indent
            + " | ".join(_format_instruction(instruction, labels_at) for instruction in line)
            + (f"  ; {comment}" if comment else "")
        )
    text.extend(f"{label}:" for label in labels_at.get(len(program.lines), ()))
    return "\n".join(text) + "\n"
