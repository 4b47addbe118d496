"""A static listing of the durable steps a workflow's ``perform()`` can take, read from its source.

    from chrono_forge.graph import durable_steps
    steps, warnings = durable_steps(OrderWorkflow)

Nothing is executed: the source is parsed with :mod:`ast`, calls to the primitives on ``self`` are
listed in source order, and same-class helper methods called as ``self.helper(...)`` are followed.
Names that are not literals are reported as dynamic (``durably_execute$*``); steps under an ``if``
are marked conditional; a step inside a loop gets a warning (its name must differ per iteration).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any, cast

#: primitive method -> the kind its step name starts with
PRIMITIVES = {
    "durably_execute": "durably_execute",
    "wait": "wait",
    "wait_until": "wait_until",
    "continue_if": "continue_if",
    "durably_repeat": "durably_repeat",
    "branch": "branch",
    "merge_branches": "merge",
    "merge_branch": "merge",
    "patched": "patch",
    "deprecate_patch": "patch",
    "receive": "receive",
    "send_to": "send_to",
}


@dataclass
class Step:
    kind: str
    name: str | None  # None: not a literal, known only at run time
    line: int
    method: str  # the method the call is written in (perform or a helper)
    conditional: bool = False
    in_loop: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def step_name(self) -> str:
        return f"{self.kind}${self.name if self.name is not None else '*'}"


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    ):
        return node.attr  # a bound method of self: the step is named after it
    return None


def _argument(call: ast.Call, position: int, keyword: str) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[position] if len(call.args) > position else None


def _step_name(primitive: str, call: ast.Call) -> tuple[str | None, list[str]]:
    """The literal name of the step a primitive call creates (None when dynamic), plus notes."""
    if primitive in ("merge_branches", "merge_branch"):
        literals = [_literal(arg) for arg in call.args]
        names = [name for name in literals if name is not None]
        if (
            not names
            or len(names) < len(literals)
            or any(isinstance(a, ast.Starred) for a in call.args)
        ):
            return None, ["merge of branches named at run time"]
        return ",".join(sorted(names)), [f"joins {', '.join(sorted(names))}"]
    if primitive == "branch":
        return _literal(_argument(call, 0, "name")), ["fan-out"]
    if primitive == "wait":
        return _literal(_argument(call, 1, "name")), []
    if primitive in ("patched", "deprecate_patch"):
        note = "patch point" if primitive == "patched" else "deprecated patch (stores nothing)"
        return _literal(_argument(call, 0, "change_id")), [note]
    explicit = next((kw.value for kw in call.keywords if kw.arg == "name"), None)  # keyword-only
    if primitive in ("receive", "send_to"):  # named after the topic unless name= is given
        topic = (
            _argument(call, 0, "topic") if primitive == "receive" else _argument(call, 2, "topic")
        )
        note = "parks until a message of its topic" if primitive == "receive" else "sends a message"
        return _literal(explicit if explicit is not None else topic), [note]
    if explicit is not None:
        return _literal(explicit), []
    notes = ["parks until the condition is true"] if primitive == "continue_if" else []
    return _literal(_argument(call, 0, "method")), notes


class _Collector(ast.NodeVisitor):
    def __init__(self, cls: type, method: str, seen: set[str], steps: list, warnings: list):
        self.cls, self.method, self.seen = cls, method, seen
        self.steps, self.warnings = steps, warnings
        self.loops = 0
        self.conditions = 0

    # Control flow: remember whether we are under an if / a loop.
    def _nested(self, node: ast.AST, attribute: str) -> None:
        setattr(self, attribute, getattr(self, attribute) + 1)
        self.generic_visit(node)
        setattr(self, attribute, getattr(self, attribute) - 1)

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        self.conditions += 1
        for child in node.body + node.orelse:
            self.visit(child)
        self.conditions -= 1

    def visit_IfExp(self, node: ast.AST) -> None:
        self._nested(node, "conditions")

    visit_Match = visit_IfExp

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self.visit(node.values[0])  # the operands after the first may be short-circuited
        self.conditions += 1
        for value in node.values[1:]:
            self.visit(value)
        self.conditions -= 1

    def visit_Try(self, node: ast.Try | ast.TryStar) -> None:
        for child in node.body:
            self.visit(child)
        self.conditions += 1  # handlers and else run only on one outcome
        for branch in [*node.handlers, *node.orelse]:
            self.visit(branch)
        self.conditions -= 1
        for child in node.finalbody:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_For(self, node: ast.AST) -> None:
        self._nested(node, "loops")

    visit_AsyncFor = visit_While = visit_comprehension = visit_For

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.Lambda) -> None:
        # A nested function or lambda may run any number of times: treat it like a loop body.
        self._nested(node, "loops")

    visit_Lambda = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)  # arguments are evaluated first
        func = node.func
        if not (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "self"
        ):
            return
        if func.attr in PRIMITIVES:
            self._record(func.attr, node)
        elif func.attr not in self.seen and inspect.isfunction(getattr(self.cls, func.attr, None)):
            for step in _collect(self.cls, func.attr, self.seen | {func.attr}, self.warnings):
                step.conditional = step.conditional or self.conditions > 0
                step.in_loop = step.in_loop or self.loops > 0
                self.steps.append(step)

    def _record(self, primitive: str, node: ast.Call) -> None:
        name, notes = _step_name(primitive, node)
        step = Step(
            kind=PRIMITIVES[primitive],
            name=name,
            line=node.lineno,
            method=self.method,
            conditional=self.conditions > 0,
            in_loop=self.loops > 0,
            notes=notes,
        )
        if name is None:
            self.warnings.append(
                f"{self.method}, line {node.lineno}: {primitive} with a name known only at run "
                f"time ({step.step_name})"
            )
        if step.in_loop:
            self.warnings.append(
                f"{self.method}, line {node.lineno}: {primitive} inside a loop: each iteration "
                "needs its own step name, or the later ones replay the first"
            )
        self.steps.append(step)


def _collect(cls: type, method: str, seen: set[str], warnings: list[str]) -> list[Step]:
    function = getattr(cls, method)
    try:
        source = textwrap.dedent(inspect.getsource(function))
        lines, first_line = inspect.getsourcelines(function)
    except (OSError, TypeError):
        warnings.append(f"{method}: source not available")
        return []
    tree = ast.parse(source)
    ast.increment_lineno(tree, first_line - 1)
    definition = cast(ast.FunctionDef, tree.body[0])  # the source of one method
    steps: list[Step] = []
    collector = _Collector(cls, method, seen, steps, warnings)
    for statement in definition.body:  # the body only: not the def (which counts as a loop)
        collector.visit(statement)
    return steps


def durable_steps(workflow_class: type) -> tuple[list[Step], list[str]]:
    """The durable steps of ``workflow_class.perform`` in source order, and warnings."""
    warnings: list[str] = []
    steps = _collect(workflow_class, "perform", {"perform"}, warnings)
    if not steps:
        warnings.append("perform() has no durable steps")
    return steps, warnings


def as_dict(workflow_class: type) -> dict[str, Any]:
    """A JSON-safe form of :func:`durable_steps`."""
    steps, warnings = durable_steps(workflow_class)
    return {
        "class": f"{workflow_class.__module__}.{workflow_class.__qualname__}",
        "steps": [
            {
                "step_name": s.step_name,
                "kind": s.kind,
                "dynamic": s.name is None,
                "line": s.line,
                "method": s.method,
                "conditional": s.conditional,
                "in_loop": s.in_loop,
                "notes": s.notes,
            }
            for s in steps
        ],
        "warnings": warnings,
    }
