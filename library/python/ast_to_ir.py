"""Python source → IR: parse the module, check it against the subset, infer which arguments are lists, and turn
each function into IR over virtual registers (docs/PYTHON.md lists the subset and every error).

Values are machine values: integers mod `n`, so `+ - *` wrap and comparisons, `//`, `%`, `min` and `max` see
values in [0, n); on the binary machine (`bits`) signed `bits`-bit integers, with Python's `//` and `%`.
A list is a pair of registers, its length and the address of its first element in memory.
Control flow is laid out for the machine's `jump` (taken when the register is nonzero): loops test at the
bottom, and counted loops (`for` over `range` or a list) count a hidden register down with the `loop`
pseudo-instruction, so the loop test shares the line of the body's last instructions.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator

import dcomp_isa

from .ir import ALWAYS, CompileError, Ins, Reg, label, phys

_ARITHMETIC = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.FloorDiv: "div", ast.Mod: "mod"}
_OPERATOR_NAMES = {
    ast.Div: "true division '/' (it gives floats; use '//')",
    ast.Pow: "'**'",
    ast.MatMult: "'@'",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
    ast.BitAnd: "'&'",
    ast.BitOr: "'|'",
    ast.BitXor: "'^'",
    ast.Invert: "'~'",
    ast.Is: "'is'",
    ast.IsNot: "'is not'",
    ast.In: "'in'",
    ast.NotIn: "'not in'",
}
# Statements outside the subset, by the name the error gives them.
_STATEMENT_NAMES = {
    ast.Try: "'try' statements",
    ast.With: "'with' statements",
    ast.Raise: "'raise' statements",
    ast.Assert: "'assert' statements",
    ast.Delete: "'del' statements",
    ast.Import: "imports",
    ast.ImportFrom: "imports",
    ast.Global: "'global' declarations",
    ast.Nonlocal: "'nonlocal' declarations (closures are not supported)",
    ast.ClassDef: "classes",
    ast.AsyncFunctionDef: "async functions",
    ast.AsyncFor: "async loops",
    ast.AsyncWith: "'async with' statements",
    ast.AnnAssign: "annotated assignments",
    ast.Match: "'match' statements",
}
_EXPRESSION_NAMES = {
    ast.Lambda: "lambda (closures are not supported)",
    ast.List: "list literals (lists come in as arguments)",
    ast.ListComp: "list comprehensions",
    ast.Tuple: "tuples outside assignments",
    ast.Dict: "dicts",
    ast.DictComp: "dict comprehensions",
    ast.Set: "sets",
    ast.SetComp: "set comprehensions",
    ast.GeneratorExp: "generator expressions",
    ast.Attribute: "attributes and methods",
    ast.Starred: "starred expressions",
    ast.NamedExpr: "assignment expressions (':=')",
    ast.JoinedStr: "f-strings",
    ast.Await: "'await'",
    ast.Yield: "'yield' (generators)",
    ast.YieldFrom: "'yield from' (generators)",
    ast.Slice: "slices",
}
_BUILTINS = frozenset({"len", "min", "max", "range"})
_INT, _LIST = "int", "list"


@dataclasses.dataclass(frozen=True)
class Signature:
    """A compiled function's interface: argument kinds (`int` or `list`) and whether it returns a value.

    Calling convention: argument i arrives in r(i + 1) (a list's length for a list), then the base address of
    each list argument, in order, in the registers after them; the result is in r0."""

    name: str
    params: tuple[str, ...]
    kinds: tuple[str, ...]
    returns_value: bool

    @property
    def registers(self) -> int:
        """How many argument registers the call fills: one per argument and one more per list."""
        return len(self.kinds) + self.kinds.count(_LIST)


@dataclasses.dataclass
class FunctionIR:
    """One function in IR: `code` over virtual registers `v0 … v{num_vregs-1}` and physical ones."""

    signature: Signature
    code: list[Ins]
    num_vregs: int
    calls: list[tuple[str, ast.AST]]  # (callee, call node) per call site
    node: ast.FunctionDef


@dataclasses.dataclass(frozen=True)
class _List:
    """A list argument: its length and base-address registers."""

    length: Reg
    base: Reg


class Source:
    """The module being compiled: its text, name (for errors) and machine parameters: values in [0, n), or
    signed `bits`-bit values on the binary machine."""

    def __init__(
        self, text: str, source_name: str, n: int, max_registers: int, memory_size: int, bits: int | None = None
    ):
        self.text = text
        self.source_name = source_name
        self.bits = bits
        self.low, self.high = (0, n) if bits is None else dcomp_isa.signed_range(bits)
        self.max_registers = max_registers  # r0 .. r{max_registers - 1} hold values
        self.memory_size = memory_size

    def wrap(self, value: int) -> int:
        """`value` as the machine's arithmetic leaves it: mod n, or wrapped to `bits` bits."""
        return value % self.high if self.bits is None else dcomp_isa.to_signed(value, self.bits)

    def error(self, node: ast.AST | None, message: str) -> CompileError:
        line = getattr(node, "lineno", 1)
        column = getattr(node, "col_offset", 0) + 1
        return CompileError(message, line=line, column=column, source_name=self.source_name)


def parse_module(source: Source) -> dict[str, ast.FunctionDef]:
    """The module's functions by name; anything but `def`s (and a docstring) at module level is an error."""
    if not isinstance(source.text, str):
        raise CompileError(
            f"expected Python source text (str), got {type(source.text).__name__}",
            line=0,
            column=0,
            source_name=source.source_name,
        )
    try:
        tree = ast.parse(source.text, filename=source.source_name)
    except SyntaxError as error:
        raise CompileError(
            f"syntax error: {error.msg}",
            line=error.lineno or 1,
            column=error.offset or 1,
            source_name=source.source_name,
        ) from None
    functions: dict[str, ast.FunctionDef] = {}
    for index, statement in enumerate(tree.body):
        if isinstance(statement, ast.FunctionDef):
            if statement.name in functions:
                raise source.error(statement, f"function '{statement.name}' is defined twice")
            if statement.name in _BUILTINS:
                raise source.error(statement, f"function '{statement.name}' shadows the builtin of that name")
            _check_signature(source, statement)
            functions[statement.name] = statement
        elif not (index == 0 and _is_docstring(statement)):
            raise source.error(statement, f"{_describe(statement)} at module level are not supported (only defs)")
    if not functions:
        raise CompileError(
            "no function to compile: the source defines none", line=1, column=1, source_name=source.source_name
        )
    return functions


def _describe(statement: ast.stmt) -> str:
    return _STATEMENT_NAMES.get(type(statement), f"'{type(statement).__name__}' statements")


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _check_signature(source: Source, function: ast.FunctionDef) -> None:
    arguments = function.args
    if function.decorator_list:
        raise source.error(function.decorator_list[0], "decorators are not supported")
    if arguments.vararg or arguments.kwarg:
        raise source.error(arguments.vararg or arguments.kwarg, "*args and **kwargs are not supported")
    if arguments.kwonlyargs or arguments.posonlyargs:
        raise source.error(function, "keyword-only and positional-only arguments are not supported")
    if arguments.defaults:
        raise source.error(arguments.defaults[0], "default argument values are not supported")
    names = [arg.arg for arg in arguments.args]
    for index, arg in enumerate(arguments.args):
        if arg.arg in names[:index]:
            raise source.error(arg, f"duplicate argument '{arg.arg}' in function definition")


def _annotation_kind(source: Source, annotation: ast.expr | None) -> str | None:
    """`int` → int, `list` / `list[int]` → list, none → inferred; anything else is an error."""
    if annotation is None:
        return None
    node = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    if isinstance(node, ast.Name) and node.id in (_INT, _LIST):
        return node.id
    raise source.error(annotation, "only 'int' and 'list[int]' annotations are supported")


def infer_signatures(source: Source, functions: dict[str, ast.FunctionDef]) -> dict[str, Signature]:
    """Which arguments are lists: annotated so, or used as one (indexed, `len`, iterated, passed on as one)."""
    kinds: dict[str, dict[str, str | None]] = {
        name: {arg.arg: _annotation_kind(source, arg.annotation) for arg in fn.args.args}
        for name, fn in functions.items()
    }
    changed = True
    while changed:
        changed = False
        for name, fn in functions.items():
            for param, kind in _list_uses(fn, functions, kinds):
                if param in kinds[name] and kinds[name][param] is None and kind == _LIST:
                    kinds[name][param] = _LIST
                    changed = True
    signatures = {}
    for name, fn in functions.items():
        returns_value = any(
            isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value)
            for node in ast.walk(fn)
        )
        params = tuple(arg.arg for arg in fn.args.args)
        signature = Signature(name, params, tuple(kinds[name][p] or _INT for p in params), returns_value)
        # r0 is the result and the highest value register may become the stack pointer: r1 .. r{max - 2} remain.
        if signature.registers > source.max_registers - 2:
            raise source.error(
                fn,
                f"'{name}' needs {signature.registers} argument registers (one per argument, two per list) but "
                f"the machine has {source.max_registers - 2} (r1..r{source.max_registers - 2})",
            )
        signatures[name] = signature
    return signatures


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _list_uses(fn: ast.FunctionDef, functions, kinds) -> Iterator[tuple[str, str]]:
    """(name, 'list') for every name used where a list is expected."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            yield node.value.id, _LIST
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Name):
            yield node.iter.id, _LIST
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "len" and node.args and isinstance(node.args[0], ast.Name):
                yield node.args[0].id, _LIST
            callee = functions.get(node.func.id)
            if callee is not None:
                for arg, param in zip(node.args, callee.args.args):
                    if isinstance(arg, ast.Name) and kinds[callee.name][param.arg] == _LIST:
                        yield arg.id, _LIST


def _stored_names(nodes) -> set[str]:
    return {
        node.id
        for tree in nodes
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }


class _Loop:
    """Labels of the innermost loop, for `break` and `continue`."""

    def __init__(self, end: str, cont: str):
        self.end = end
        self.cont = cont
        self.continued = False


class FunctionCompiler:
    """Turns one function's AST into IR (`compile()` → `FunctionIR`)."""

    def __init__(self, source: Source, fn: ast.FunctionDef, signatures: dict[str, Signature]):
        self.source = source
        self.fn = fn
        self.signatures = signatures
        self.signature = signatures[fn.name]
        self.code: list[Ins] = []
        self.num_vregs = 0
        self.labels = 0
        self.weight = 1
        self.loops: list[_Loop] = []
        self.calls: list[tuple[str, ast.AST]] = []
        self.variables: dict[str, Reg | _List] = {}
        self.assigned = _stored_names(fn.body)
        self.entry_code: list[Ins] = []  # computed once at the function's entry (offset_base)
        self.offset_bases: dict[tuple[Reg, int], Reg] = {}

    # ---------------------------------------------------------------------------------------------- helpers
    def error(self, node: ast.AST, message: str) -> CompileError:
        return self.source.error(node, message)

    def temp(self) -> Reg:
        self.num_vregs += 1
        return Reg(self.num_vregs - 1)

    def new_label(self, hint: str) -> str:
        self.labels += 1
        return f"{self.fn.name}.{hint}{self.labels}"

    def emit(self, op: str, **fields) -> None:
        self.code.append(Ins(op, weight=self.weight, **fields))

    def jump(self, register: Reg, target: str) -> None:
        self.emit("jump", a=register, target=target)

    def goto(self, target: str) -> None:
        self.emit("jump", a=self.always, target=target, imm=ALWAYS)

    def place(self, name: str) -> None:
        self.code.append(label(name))

    # ---------------------------------------------------------------------------------------------- function
    def compile(self, always: Reg) -> FunctionIR:
        self.always = always
        signature = self.signature
        self.place(f"{self.fn.name}.start")
        registers = iter(range(1, signature.registers + 1))
        lists = []
        for name, kind in zip(signature.params, signature.kinds):
            register = phys(next(registers))
            value: Reg | _List
            if kind == _LIST:
                if name in self.assigned:
                    raise self.error(self.fn, f"assigning to the list argument '{name}' is not supported")
                value = _List(self.temp(), self.temp())
                self.emit("copy", a=register, out=value.length)
                lists.append(value)
            else:
                value = self.temp()
                self.emit("copy", a=register, out=value)
            self.variables[name] = value
        for value in lists:
            self.emit("copy", a=phys(next(registers)), out=value.base)
        entry = len(self.code)
        body = self.fn.body[1:] if self.fn.body and _is_docstring(self.fn.body[0]) else self.fn.body
        for statement in body:
            self.statement(statement)
        self.emit_ret()
        self.code[entry:entry] = self.entry_code
        return FunctionIR(signature, self.code, self.num_vregs, self.calls, self.fn)

    def emit_ret(self) -> None:
        """`ret`, reading r0 when the function has a result (so r0 is free for values in one without)."""
        self.emit("ret", a=phys(0) if self.signature.returns_value else None, b=self.always)

    def variable(self, name: str, node: ast.AST) -> Reg:
        """The register of int variable `name` (created on first assignment)."""
        value = self.variables.get(name)
        if isinstance(value, _List):
            raise self.error(node, f"'{name}' is a list, used here as a number")
        if value is None:
            if name not in self.assigned:
                raise self.error(node, self._undefined(name))
            value = self.variables[name] = self.temp()
        return value

    def _undefined(self, name: str) -> str:
        if name in self.signatures:
            return f"function '{name}' used as a value (functions are only called)"
        if name in _BUILTINS:
            return f"builtin '{name}' used as a value (it is only called)"
        return f"name '{name}' is not defined"

    def list_value(self, node: ast.expr) -> _List:
        if isinstance(node, ast.Name):
            value = self.variables.get(node.id)
            if isinstance(value, _List):
                return value
            if value is not None or node.id in self.assigned:
                raise self.error(node, f"'{node.id}' is a number, used here as a list")
            raise self.error(node, self._undefined(node.id))
        raise self.error(node, "only list arguments can be indexed, iterated or measured (lists are arguments)")

    # ---------------------------------------------------------------------------------------------- statements
    def statement(self, node: ast.stmt) -> None:
        method = getattr(self, f"stmt_{type(node).__name__}", None)
        if method is None:
            if isinstance(node, ast.FunctionDef):
                raise self.error(node, "nested functions are not supported (closures are not supported)")
            raise self.error(node, f"{_describe(node)} are not supported")
        method(node)

    def stmt_Pass(self, node: ast.Pass) -> None:
        pass

    def stmt_Expr(self, node: ast.Expr) -> None:
        if _is_docstring(node):
            return
        if isinstance(node.value, ast.Call):
            self.call(node.value, want_result=False)
        else:
            self.expr(node.value)

    def stmt_Return(self, node: ast.Return) -> None:
        if node.value is not None and not _is_none(node.value):
            if isinstance(node.value, ast.Name) and isinstance(self.variables.get(node.value.id), _List):
                raise self.error(node.value, "returning a list is not supported (lists are changed in place)")
            self.compute(node.value, phys(0))
        self.emit_ret()

    def stmt_Assign(self, node: ast.Assign) -> None:
        if len(node.targets) != 1:
            raise self.error(node, "chained assignment (a = b = ...) is not supported")
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Tuple):
            self.tuple_assign(target, value)
        elif isinstance(value, ast.Tuple):
            raise self.error(value, "tuples outside tuple assignment are not supported")
        else:
            self.store(target, value)

    def store(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.compute(value, self.variable(target.id, target))
        elif isinstance(target, ast.Subscript):
            address = self.address(target)
            self.emit("write", a=address, b=self.expr(value))
        else:
            raise self.error(target, f"assignment to {_EXPRESSION_NAMES.get(type(target), 'this target')}")

    def tuple_assign(self, target: ast.Tuple, value: ast.expr) -> None:
        if not isinstance(value, ast.Tuple) or len(value.elts) != len(target.elts):
            raise self.error(value, "tuple assignment needs a tuple of the same length on the right")
        for element in target.elts:
            if not isinstance(element, (ast.Name, ast.Subscript)):
                raise self.error(element, "only names and list items can be assigned in a tuple assignment")
        names = [element.id for element in target.elts if isinstance(element, ast.Name)]
        has_call = any(isinstance(node, ast.Call) for element in value.elts for node in ast.walk(element))
        if len(names) == len(target.elts) and len(set(names)) == len(names) and not has_call:
            # Every lane of a line reads the state from before it: `a, b = b, a + b` is one parallel group.
            pending = [self.pending(element) for element in value.elts]
            group = tuple(
                dataclasses.replace(ins, out=self.variable(name, element), weight=self.weight)
                for ins, name, element in zip(pending, names, target.elts)
            )
            self.code.append(Ins("parallel", weight=self.weight, group=group))
            return
        values = [self.fresh(element) for element in value.elts]  # the right side first, then left to right
        for element, register in zip(target.elts, values):
            if isinstance(element, ast.Name):
                self.emit("copy", a=register, out=self.variable(element.id, element))
            elif isinstance(element, ast.Subscript):
                self.emit("write", a=self.address(element), b=register)

    def stmt_AugAssign(self, node: ast.AugAssign) -> None:
        operation = ast.BinOp(left=node.target, op=node.op, right=node.value)
        ast.copy_location(operation, node)
        if isinstance(node.target, ast.Name):
            load = ast.Name(id=node.target.id, ctx=ast.Load())
            operation.left = ast.copy_location(load, node.target)
            self.compute(operation, self.variable(node.target.id, node.target))
        elif isinstance(node.target, ast.Subscript):
            address = self.address(node.target)
            current = self.temp()
            self.emit("read", a=address, out=current)
            result = self.temp()
            self.binary(node.op, current, node.value, node, result)
            self.emit("write", a=address, b=result)
        else:
            raise self.error(node.target, "augmented assignment to this target is not supported")

    def stmt_If(self, node: ast.If) -> None:
        end = self.new_label("endif")
        other = self.new_label("else") if node.orelse else end
        self.branch(node.test, other, when=False)
        for statement in node.body:
            self.statement(statement)
        if node.orelse:
            self.goto(end)
            self.place(other)
            for statement in node.orelse:
                self.statement(statement)
        self.place(end)

    def stmt_While(self, node: ast.While) -> None:
        if node.orelse:
            raise self.error(node.orelse[0], "'else' on loops is not supported")
        top, cont, end = self.new_label("while"), self.new_label("test"), self.new_label("endwhile")
        forever = _constant_truth(node.test)
        if forever is False:
            return
        if forever is None:
            self.branch(node.test, end, when=False)
        self.place(top)

        def latch():
            if forever:
                self.goto(top)
            else:
                self.branch(node.test, top, when=True)

        self.body(node.body, _Loop(end, cont), None, latch)
        self.place(end)

    def body(self, statements: list[ast.stmt], loop: _Loop, first=None, latch=None) -> None:
        """A loop body, one loop deeper: `first()` emits what starts each iteration, the `continue` label goes
        after the statements, and `latch()` emits what ends each iteration."""
        outer = self.weight
        self.weight *= 10
        if first is not None:
            first()
        self.loops.append(loop)
        for statement in statements:
            self.statement(statement)
        self.loops.pop()
        if loop.continued:
            self.place(loop.cont)
        if latch is not None:
            latch()
        self.weight = outer

    def stmt_Break(self, node: ast.Break) -> None:
        if not self.loops:
            raise self.error(node, "'break' outside a loop")
        self.goto(self.loops[-1].end)

    def stmt_Continue(self, node: ast.Continue) -> None:
        if not self.loops:
            raise self.error(node, "'continue' outside a loop")
        self.loops[-1].continued = True
        self.goto(self.loops[-1].cont)

    def stmt_For(self, node: ast.For) -> None:
        if node.orelse:
            raise self.error(node.orelse[0], "'else' on loops is not supported")
        if not isinstance(node.target, ast.Name):
            raise self.error(node.target, "the loop variable must be a name")
        name = node.target.id
        if name in self.variables and isinstance(self.variables[name], _List):
            raise self.error(node.target, f"'{name}' is a list, used here as a loop variable")
        iterator = node.iter
        if isinstance(iterator, ast.Call) and isinstance(iterator.func, ast.Name) and iterator.func.id == "range":
            self.for_range(node, name, iterator)
        elif isinstance(iterator, ast.Name):
            self.for_list(node, name, self.list_value(iterator))
        else:
            raise self.error(iterator, "a for loop iterates over range(...) or a list argument")

    def _private_loop_variable(self, node: ast.For, name: str) -> bool:
        """The loop variable is only read inside the loop body and never assigned there: the loop may leave it
        one step past its last value (its register then doubles as the counter)."""
        return name not in _loaded_outside(self.fn, node) and name not in _stored_names(node.body)

    def for_range(self, node: ast.For, name: str, call: ast.Call) -> None:
        if call.keywords or not 1 <= len(call.args) <= 3:
            raise self.error(call, "range() takes 1 to 3 positional arguments")
        step = 1
        if len(call.args) == 3:
            folded = _fold(call.args[2], self.source, signed=True)
            if folded is None:
                raise self.error(call.args[2], "the step of range() must be a constant")
            step = folded
            if step == 0:
                raise self.error(call.args[2], "range() step must not be zero")
        start_node = call.args[0] if len(call.args) > 1 else ast.copy_location(ast.Constant(0), call)
        stop_node = call.args[1] if len(call.args) > 1 else call.args[0]
        private = self._private_loop_variable(node, name)
        variable = self.variable(name, node.target)
        counter = variable if private else self.temp()
        self.compute(start_node, counter)  # only the body reads the counter, so it may take the start at once
        start = counter
        stop = self.expr(stop_node)
        low_node, (low, high) = (start_node, (start, stop)) if step > 0 else (stop_node, (stop, start))
        # The loop counter starts at the trip count - 1 = (high - low - 1) // |step|; computed before the test
        # for an empty range (unused then) so that it shares the test's line.
        remaining = self.temp()
        if _fold(low_node, self.source) == 0:
            self.emit("dec", a=high, out=remaining)
        else:
            self.emit("sub", a=high, b=low, out=remaining)
            self.emit("dec", a=remaining, out=remaining)
        if abs(step) != 1:
            self.emit("div", a=remaining, b=self.constant(abs(step)), out=remaining)
        end = self.new_label("endfor")
        if _fold(low_node, self.source) == 0:
            self.branch_compare(">", high, None, end, when=False)
        else:
            self.branch_compare("<", low, high, end, when=False)
        top = self.new_label("for")
        self.place(top)

        def first():
            if not private:
                self.emit("copy", a=counter, out=variable)

        def latch():
            self.advance(counter, step)
            self.emit("loop", a=remaining, target=top)

        self.body(node.body, _Loop(end, self.new_label("next")), first, latch)
        self.place(end)

    def advance(self, register: Reg, step: int) -> None:
        if step == 1:
            self.emit("inc", a=register, out=register)
        elif step == -1:
            self.emit("dec", a=register, out=register)
        else:
            self.emit("add", a=register, b=self.constant(self.source.wrap(step)), out=register)

    def for_list(self, node: ast.For, name: str, values: _List) -> None:
        remaining, pointer = self.temp(), self.temp()
        self.emit("dec", a=values.length, out=remaining)
        self.emit("copy", a=values.base, out=pointer)
        variable = self.variable(name, node.target)
        # Pipelined: the next element is loaded on the last line of the body, so the body runs one line shorter;
        # the variable then ends one element past the list, hence only when nothing reads it after the loop.
        pipelined = self._private_loop_variable(node, name) and not _uses_continue(node.body)

        def load():
            self.emit("read", a=pointer, out=variable)
            self.emit("inc", a=pointer, out=pointer)

        if pipelined:
            load()  # reading the cell of an empty list is harmless
        end = self.new_label("endfor")
        self.branch_compare("!=", values.length, None, end, when=False)
        top = self.new_label("for")
        self.place(top)

        def latch():
            if pipelined:
                load()
            self.emit("loop", a=remaining, target=top)

        self.body(node.body, _Loop(end, self.new_label("next")), None if pipelined else load, latch)
        self.place(end)

    # ---------------------------------------------------------------------------------------------- conditions
    def branch(self, node: ast.expr, target: str, when: bool) -> None:
        """Jumps to `target` if the truth of `node` equals `when`, else falls through."""
        truth = _constant_truth(node)
        if truth is not None:
            if truth == when:
                self.goto(target)
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self.branch(node.operand, target, not when)
        elif isinstance(node, ast.BoolOp):
            short = isinstance(node.op, ast.Or)  # `or` is decided by the first true value, `and` by a false one
            if short == when:
                for value in node.values:
                    self.branch(value, target, when)
            else:
                skip = self.new_label("skip")
                for value in node.values[:-1]:
                    self.branch(value, skip, not when)
                self.branch(node.values[-1], target, when)
                self.place(skip)
        elif isinstance(node, ast.Compare):
            left = self.expr(node.left)
            pairs = list(zip(node.ops, node.comparators))
            if len(pairs) == 1:
                self.branch_compare(self.comparison(pairs[0][0], node), left, self.operand(pairs[0][1]), target, when)
                return
            skip = self.new_label("skip")
            for index, (op, comparator) in enumerate(pairs):  # a chain: each middle operand is evaluated once
                right = self.expr(comparator)
                symbol = self.comparison(op, node)
                if index == len(pairs) - 1:
                    self.branch_compare(symbol, left, right, target, when)
                else:
                    self.branch_compare(symbol, left, right, target if not when else skip, False)
                left = right
            self.place(skip)
        else:
            self.branch_compare("!=", self.expr(node), None, target, when)

    def comparison(self, op: ast.cmpop, node: ast.AST) -> str:
        symbols = {ast.Lt: "<", ast.Gt: ">", ast.LtE: "<=", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
        if type(op) not in symbols:
            raise self.error(node, f"{_OPERATOR_NAMES.get(type(op), type(op).__name__)} is not supported")
        return symbols[type(op)]

    def operand(self, node: ast.expr) -> Reg | None:
        """A register for `node`, or None for the constant 0 (compared against without a register)."""
        return None if _fold(node, self.source) == 0 else self.expr(node)

    def branch_compare(self, symbol: str, left: Reg, right: Reg | None, target: str, when: bool) -> None:
        """Jumps to `target` if `left symbol right` equals `when`; `right` None is the constant 0."""
        if not when:
            symbol = {"<": ">=", ">=": "<", ">": "<=", "<=": ">", "==": "!=", "!=": "=="}[symbol]
        if right is None and self.source.low < 0 and symbol not in ("==", "!="):
            right = self.constant(0)  # signed values: an order against 0 is a comparison
        if right is None:  # against 0, with every value >= 0: x > 0 is x != 0, x <= 0 is x == 0
            symbol = {">": "!=", "<=": "==", "<": "never", ">=": "always"}.get(symbol, symbol)
            if symbol == "always":
                self.goto(target)
            elif symbol == "!=":
                self.jump(left, target)
            elif symbol == "==":  # past an unconditional jump: one line when the value is nonzero
                skip = self.new_label("skip")
                self.jump(left, skip)
                self.goto(target)
                self.place(skip)
            return
        flag = self.temp()
        if symbol == "!=":
            self.emit("sub", a=left, b=right, out=flag)  # nonzero exactly when they differ
        elif symbol in ("<", ">", "=="):
            a, b = (right, left) if symbol == ">" else (left, right)
            self.emit("eq" if symbol == "==" else "lt", a=a, b=b, out=flag)
        else:  # <= and >=: jump on the opposite strict comparison past an unconditional jump
            a, b = (right, left) if symbol == "<=" else (left, right)
            self.emit("lt", a=a, b=b, out=flag)
            skip = self.new_label("skip")
            self.jump(flag, skip)
            self.goto(target)
            self.place(skip)
            return
        self.jump(flag, target)

    # ---------------------------------------------------------------------------------------------- expressions
    def expr(self, node: ast.expr) -> Reg:
        """A register holding the value of `node` (a variable's own register when `node` is that variable)."""
        pending = self.pending(node)
        if pending.op == "copy" and pending.a is not None:
            return pending.a
        result = self.temp()
        self.code.append(dataclasses.replace(pending, out=result, weight=self.weight))
        return result

    def fresh(self, node: ast.expr) -> Reg:
        """Like `expr`, but in a register of its own that later assignments cannot change."""
        result = self.temp()
        self.compute(node, result)
        return result

    def compute(self, node: ast.expr, out: Reg) -> None:
        """Evaluates `node` into `out`."""
        pending = self.pending(node)
        if not (pending.op == "copy" and pending.a == out):
            self.code.append(dataclasses.replace(pending, out=out, weight=self.weight))

    def constant(self, value: int) -> Reg:
        register = self.temp()
        self.emit("set", imm=value, out=register)
        return register

    def pending(self, node: ast.expr) -> Ins:
        """The last instruction computing `node`, without its output register; what it reads is emitted."""
        folded = _fold(node, self.source)
        if folded is not None:
            return Ins("set", imm=folded)
        if isinstance(node, ast.Constant):
            self.check_constant(node)
        if isinstance(node, ast.Name):
            return Ins("copy", a=self.variable(node.id, node))
        if isinstance(node, ast.BinOp):
            return self.binary_pending(node.op, self.expr(node.left), node.right, node)
        if isinstance(node, ast.UnaryOp):
            if self.source.low < 0 and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
                self.check_constant(node.operand, negated=True)  # a negative literal out of the signed range
            operand = self.expr(node.operand)
            if isinstance(node.op, ast.Not):
                return Ins("not", a=operand)
            if isinstance(node.op, ast.UAdd):
                return Ins("copy", a=operand)
            if isinstance(node.op, ast.USub):
                return Ins("sub", a=self.constant(0), b=operand)
            raise self.error(node, f"{_OPERATOR_NAMES[type(node.op)]} is not supported")
        if isinstance(node, ast.Compare):
            if len(node.ops) == 1:
                return self.compare_pending(self.comparison(node.ops[0], node), node.left, node.comparators[0])
            return Ins("copy", a=self.via_branches(node))
        if isinstance(node, (ast.BoolOp, ast.IfExp)):
            return Ins("copy", a=self.via_branches(node))
        if isinstance(node, ast.Subscript):
            return Ins("read", a=self.address(node))
        if isinstance(node, ast.Call):
            return self.call_pending(node)
        raise self.error(node, f"{_EXPRESSION_NAMES.get(type(node), type(node).__name__)} are not supported")

    def check_constant(self, node: ast.Constant, negated: bool = False) -> None:
        """Raises the error for a literal that is not a machine value (`negated`: the literal under a unary `-`,
        reported as the negative number it writes)."""
        value = node.value
        if isinstance(value, float):
            raise self.error(node, "floats are not supported")
        if isinstance(value, complex):
            raise self.error(node, "complex numbers are not supported")
        if isinstance(value, (str, bytes)):
            raise self.error(node, "strings are not supported")
        if value is None or value is Ellipsis:
            raise self.error(node, f"{value!r} is not supported as a value")
        raise self.error(
            node,
            f"constant {-value if negated else value} does not fit the machine's values "
            f"[{self.source.low}, {self.source.high})",
        )

    def binary_pending(self, op: ast.operator, left: Reg, right_node: ast.expr, node: ast.AST) -> Ins:
        name = _ARITHMETIC.get(type(op))
        if name is None:
            raise self.error(node, f"{_OPERATOR_NAMES.get(type(op), type(op).__name__)} is not supported")
        right_value = _fold(right_node, self.source)
        if name in ("div", "mod") and right_value == 0:
            raise self.error(right_node, "integer division or modulo by zero")
        if right_value == 1 and name in ("add", "sub"):
            return Ins("inc" if name == "add" else "dec", a=left)
        return Ins(name, a=left, b=self.expr(right_node))

    def binary(self, op: ast.operator, left: Reg, right_node: ast.expr, node: ast.AST, out: Reg) -> None:
        pending = self.binary_pending(op, left, right_node, node)
        self.code.append(dataclasses.replace(pending, out=out, weight=self.weight))

    def compare_pending(self, symbol: str, left_node: ast.expr, right_node: ast.expr) -> Ins:
        """A 0/1 comparison: `<`, `>` and `==` are one instruction, the others a second `not`."""
        left, right = self.expr(left_node), self.expr(right_node)
        if symbol in ("<", ">", "=="):
            a, b = (right, left) if symbol == ">" else (left, right)
            return Ins("eq" if symbol == "==" else "lt", a=a, b=b)
        flag = self.temp()
        if symbol == "!=":
            self.emit("eq", a=left, b=right, out=flag)
        else:
            a, b = (right, left) if symbol == "<=" else (left, right)
            self.emit("lt", a=a, b=b, out=flag)
        return Ins("not", a=flag)

    def via_branches(self, node: ast.expr) -> Reg:
        """`and`, `or`, chained comparisons and `x if c else y`, as branches writing one register."""
        result = self.temp()
        end = self.new_label("end")
        if isinstance(node, ast.IfExp):
            other = self.new_label("else")
            self.branch(node.test, other, when=False)
            self.compute(node.body, result)
            self.goto(end)
            self.place(other)
            self.compute(node.orelse, result)
        elif isinstance(node, ast.BoolOp):  # the value is the first operand that decides, as in Python
            for value in node.values[:-1]:
                self.compute(value, result)
                self.branch_compare("!=", result, None, end, when=isinstance(node.op, ast.Or))
            self.compute(node.values[-1], result)
        else:  # a chained comparison: 0 at the first false link, else 1
            self.emit("set", imm=0, out=result)
            self.branch(node, end, when=False)
            self.emit("set", imm=1, out=result)
        self.place(end)
        return result

    def address(self, node: ast.Subscript) -> Reg:
        """The memory address of `xs[i]`: base + i (base + len + i for a constant negative index)."""
        values = self.list_value(node.value)
        index = node.slice
        if isinstance(index, ast.Slice):
            raise self.error(index, "slices are not supported")
        constant = _fold(index, self.source, signed=True)
        result = self.temp()
        offset = _constant_offset(index, self.source)
        if constant is not None and constant < 0:
            self.emit("add", a=values.base, b=values.length, out=result)
            self.emit("sub", a=result, b=self.constant(self.source.wrap(-constant)), out=result)
        elif constant == 0:
            return values.base
        elif offset is not None:  # xs[i + 1] is (base + 1) + i, with base + 1 computed once at the entry
            self.emit("add", a=self.offset_base(values, offset[1]), b=self.expr(offset[0]), out=result)
        else:
            self.emit("add", a=values.base, b=self.expr(index), out=result)
        return result

    def offset_base(self, values: _List, offset: int) -> Reg:
        """A register holding base + offset, computed at the function's entry (list arguments never change)."""
        key = (values.base, offset)
        if key not in self.offset_bases:
            register, constant = self.temp(), self.temp()
            self.entry_code += [
                Ins("set", imm=offset, out=constant),
                Ins("add", a=values.base, b=constant, out=register),
            ]
            self.offset_bases[key] = register
        return self.offset_bases[key]

    def call_pending(self, node: ast.Call) -> Ins:
        if not isinstance(node.func, ast.Name):
            raise self.error(node.func, "only calls of functions by name are supported (no methods)")
        name = node.func.id
        if node.keywords:
            raise self.error(node.keywords[0], "keyword arguments are not supported")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.error(node, "starred arguments are not supported")
        if name == "len":
            if len(node.args) != 1:
                raise self.error(node, "len() takes exactly one argument")
            return Ins("copy", a=self.list_value(node.args[0]).length)
        if name in ("min", "max"):
            if len(node.args) != 2:
                raise self.error(node, f"{name}() of exactly two values is supported")
            return Ins(name, a=self.expr(node.args[0]), b=self.expr(node.args[1]))
        if name == "range":
            raise self.error(node, "range() is only supported as the iterable of a for loop")
        result = self.call(node, want_result=True)
        return Ins("copy", a=result)

    def call(self, node: ast.Call, want_result: bool) -> Reg | None:
        if not isinstance(node.func, ast.Name):
            raise self.error(node.func, "only calls of functions by name are supported (no methods)")
        name = node.func.id
        if name in _BUILTINS:
            value = self.expr(node)
            return value if want_result else None
        signature = self.signatures.get(name)
        if signature is None:
            raise self.error(node, f"unknown function '{name}' (defined here: {', '.join(self.signatures)})")
        if node.keywords:
            raise self.error(node.keywords[0], "keyword arguments are not supported")
        if len(node.args) != len(signature.params):
            raise self.error(node, f"'{name}' takes {len(signature.params)} arguments, got {len(node.args)}")
        if want_result and not signature.returns_value:
            raise self.error(node, f"'{name}' returns no value (None), used here as a number")
        lengths, bases = [], []
        for arg, kind in zip(node.args, signature.kinds):
            if kind == _LIST:
                values = self.list_value(arg)
                lengths.append(values.length)
                bases.append(values.base)
            elif isinstance(arg, ast.Name) and isinstance(self.variables.get(arg.id), _List):
                raise self.error(arg, f"'{name}' takes a number here, got the list '{arg.id}'")
            else:
                lengths.append(self.expr(arg))
        result = self.temp() if want_result else None
        self.calls.append((name, node))
        self.code.append(Ins("call", target=name, args=(*lengths, *bases), result=result, weight=self.weight))
        return result


def _loaded_outside(fn: ast.FunctionDef, loop: ast.For) -> set[str]:
    """The names `fn` reads outside `loop`'s body."""
    inside = {id(node) for statement in loop.body for node in ast.walk(statement)}
    return {
        node.id
        for node in ast.walk(fn)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in inside
    }


def _constant_offset(index: ast.expr, source: Source) -> tuple[ast.expr, int] | None:
    """(e, c) for an index `e + c`, `c + e` or `e - c` with a constant c != 0 and e not constant."""
    if not isinstance(index, ast.BinOp) or not isinstance(index.op, (ast.Add, ast.Sub)):
        return None
    left, right = _fold(index.left, source), _fold(index.right, source)
    if right is not None and left is None and right != 0:
        return index.left, (right if isinstance(index.op, ast.Add) else source.wrap(-right))
    if left is not None and right is None and left != 0 and isinstance(index.op, ast.Add):
        return index.right, left
    return None


def _uses_continue(body: list[ast.stmt]) -> bool:
    return any(isinstance(node, ast.Continue) for statement in body for node in ast.walk(statement))


def _constant_truth(node: ast.expr) -> bool | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int)) and not isinstance(node.value, float):
        return bool(node.value)
    return None


def _fold(node: ast.expr, source: Source, signed: bool = False) -> int | None:
    """The value of a constant expression with the machine's semantics (mod n, or wrapped to `bits` bits), or
    None if it is not constant.

    `signed` keeps a literal negative number negative on the one-hot machine too (range steps and list indices
    count from the end)."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int) and source.low <= value < source.high:
            return value
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = node.operand
        if isinstance(operand, ast.Constant) and type(operand.value) is int and source.low <= -operand.value < 0:
            return -operand.value  # the signed range's lowest value, whose absolute value is out of range
        inner = _fold(operand, source)
        if inner is None:
            return None
        return -inner if signed else source.wrap(-inner)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
        return _fold(node.operand, source, signed)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _fold(node.left, source), _fold(node.right, source)
        if left is None or right is None:
            return None
        op = _ARITHMETIC[type(node.op)]
        if op in ("div", "mod"):
            if right == 0:
                return None  # reported where the expression is compiled
            value = left // right if op == "div" else left % right
        else:
            value = {"add": left + right, "sub": left - right, "mul": left * right}[op]
        return source.wrap(value)
    return None
