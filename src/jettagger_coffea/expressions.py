"""A restricted evaluator for weaver ``new_variables`` / ``selection`` expressions — configs are data.

The expression is parsed with :mod:`ast` and interpreted node by node: names, literals, arithmetic,
comparisons, boolean logic and calls of whitelisted ``np.`` / ``ak.`` / ``math.`` functions. Nothing is
ever passed to :func:`eval`; attribute access other than ``module.function``, dunders, imports,
lambdas and comprehensions are refused when the config is loaded.

A whitelist alone does not stop a formula from exhausting the machine (``0*(9**9**9**9)`` is Python
integer arithmetic that never ends), so expressions are also bounded at load: their length, number of
nodes and depth, constant exponents (at most :data:`MAX_EXPONENT`), nested powers, repeated sequences and
``pad_none`` targets above the length cap. ``$JETTAGGER_UNBOUNDED_EXPRESSIONS=1`` lifts these bounds
(never the whitelist).
"""

from __future__ import annotations

import ast
import math
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import awkward as ak
import numpy as np

from ._errors import JetTaggerError

_NUMPY = {
    "abs",
    "absolute",
    "arccos",
    "arccosh",
    "arcsin",
    "arcsinh",
    "arctan",
    "arctan2",
    "arctanh",
    "ceil",
    "clip",
    "cos",
    "cosh",
    "exp",
    "expm1",
    "floor",
    "fmod",
    "hypot",
    "isfinite",
    "isinf",
    "isnan",
    "log",
    "log10",
    "log1p",
    "log2",
    "logical_and",
    "logical_not",
    "logical_or",
    "maximum",
    "minimum",
    "mod",
    "nan_to_num",
    "ones_like",
    "power",
    "round",
    "sign",
    "sin",
    "sinh",
    "sqrt",
    "square",
    "tan",
    "tanh",
    "where",
    "zeros_like",
    "full_like",
    "argmax",
    "argmin",
    "stack",
    "sum",
    "max",
    "min",
    "mean",
}
_NUMPY_CONSTANTS = {"pi", "e", "inf", "nan"}
_AWKWARD = {
    "ones_like",
    "zeros_like",
    "full_like",
    "num",
    "sum",
    "max",
    "min",
    "mean",
    "where",
    "fill_none",
    "pad_none",
    "firsts",
    "values_astype",
    "to_numpy",
    "any",
    "all",
    "argmax",
    "argmin",
    "local_index",
    "count",
    "nan_to_num",
    "flatten",
}
_MATH = {"log", "exp", "sqrt", "tanh", "sinh", "cosh", "atan2", "hypot", "pow", "fabs", "log10", "log1p"}
_MATH_CONSTANTS = {"pi", "e", "inf", "nan"}

_MODULES: dict[str, tuple[Any, set[str], set[str]]] = {
    "np": (np, _NUMPY, _NUMPY_CONSTANTS),
    "numpy": (np, _NUMPY, _NUMPY_CONSTANTS),
    "ak": (ak, _AWKWARD, set()),
    "awkward": (ak, _AWKWARD, set()),
    "math": (math, _MATH, _MATH_CONSTANTS),
}

_BINOPS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
_UNARY: dict[type, Callable] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
    ast.Not: np.logical_not,
}
_COMPARE: dict[type, Callable] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


#: bounds on an expression (see the module docstring); a weaver formula is a few dozen nodes
MAX_SOURCE = 2000
MAX_NODES = 400
MAX_DEPTH = 40
MAX_EXPONENT = 64
UNBOUNDED_ENV = "JETTAGGER_UNBOUNDED_EXPRESSIONS"


def _bounded() -> bool:
    return os.environ.get(UNBOUNDED_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


def _depth(node: ast.AST, limit: int) -> int:
    """The depth of the tree, counted no further than ``limit + 1``."""
    stack, deepest = [(node, 1)], 0
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        if d <= limit:
            stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))
    return deepest


def _constant_number(node: ast.AST) -> float | None:
    """The value of a literal number, possibly signed (``-3``), else None."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign, node = (-sign if isinstance(node.op, ast.USub) else sign), node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return sign * node.value
    return None


def _constant_value(node: ast.AST) -> float | None:
    """The value of literal arithmetic (``1/3``, ``2*3``: numbers, + - * / // %, signs; the source length
    bounds it), None for anything else."""
    arithmetic = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd)
    for n in ast.walk(node):
        literal = isinstance(n, ast.Constant) and type(n.value) in (int, float)
        if not (literal or isinstance(n, (ast.BinOp, ast.UnaryOp, *arithmetic))):
            return None
    try:
        value = _Interpreter(_no_names).visit(node)
    except (ArithmeticError, KeyError, TypeError):
        return None
    return float(value) if math.isfinite(value) else None


def _no_names(name: str) -> Any:  # pragma: no cover - literal arithmetic reads no names
    raise KeyError(name)


def _reads_data(node: ast.AST) -> bool:
    """Whether a sub-expression reads a variable or calls a function (it is then an array, not Python int
    arithmetic)."""
    return any(isinstance(n, (ast.Name, ast.Call)) for n in ast.walk(node))


#: awkward-0 spellings that weaver still accepts in old configs -> their awkward-2 equivalents
LEGACY = {
    "awkward.JaggedArray.ones_like": "ak.ones_like",
    "awkward.JaggedArray.zeros_like": "ak.zeros_like",
}


def translate_legacy(source: str) -> str:
    """Rewrite awkward-0 spellings (text substitution before parsing; the result is still only parsed)."""
    for old, new in LEGACY.items():
        source = source.replace(old, new)
    return source


class Expression:
    """A validated expression; :attr:`names` are the variables it reads."""

    def __init__(self, source: str, where: str = "expression") -> None:
        self.source = str(source)
        self.where = where
        self._bounded = _bounded()
        if self._bounded and len(self.source) > MAX_SOURCE:
            raise self._beyond(f"{len(self.source)} characters (at most {MAX_SOURCE})")
        try:
            tree = ast.parse(self.source.strip(), mode="eval")
        except (SyntaxError, RecursionError, MemoryError) as err:
            msg = getattr(err, "msg", None) or type(err).__name__
            raise JetTaggerError(f"{where}: cannot parse {self.source!r}: {msg}") from None
        self._tree = tree.body
        self.names: set[str] = set()
        if self._bounded:
            self._check_size(self._tree)
        self._check(self._tree)

    def _refuse(self, what: str) -> JetTaggerError:
        return JetTaggerError(f"{self.where}: refused expression {self.source!r}: {what} is not allowed")

    def _beyond(self, what: str) -> JetTaggerError:
        """A bound of :data:`MAX_NODES` etc. exceeded: one line with the override."""
        shown = self.source if len(self.source) <= 80 else self.source[:77] + "..."
        return JetTaggerError(
            f"{self.where}: refused expression {shown!r}: {what}; bounds on configs keep a formula from "
            f"exhausting the machine ({UNBOUNDED_ENV}=1 lifts them)"
        )

    def _check_size(self, tree: ast.AST) -> None:
        nodes = sum(1 for _ in ast.walk(tree))
        if nodes > MAX_NODES:
            raise self._beyond(f"{nodes} nodes (at most {MAX_NODES})")
        if (depth := _depth(tree, MAX_DEPTH)) > MAX_DEPTH:
            raise self._beyond(f"nested deeper than {MAX_DEPTH} (depth {depth})")

    def _check_bounds(self, node: ast.AST) -> None:
        """What would exhaust the machine: a power of constants beyond :data:`MAX_EXPONENT` or of a power
        (Python integer arithmetic, unbounded; powers of arrays are numpy's and overflow instead), a
        repeated sequence (``'a' * 10**9``), ``pad_none`` beyond the length cap."""
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            self._check_power(node)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            if any(
                isinstance(side, (ast.List, ast.Tuple))
                or (isinstance(side, ast.Constant) and isinstance(side.value, str))
                for side in (node.left, node.right)
            ):
                raise self._beyond("repeating a sequence with *")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "pad_none"
        ):
            self._check_pad_target(node)

    def _check_power(self, node: ast.BinOp) -> None:
        """An exponent that reads no data must be a number (``1/3`` is one) of magnitude at most
        :data:`MAX_EXPONENT`, without a power in it; a base that reads no data must hold no power."""

        def has_power(n: ast.AST) -> bool:
            return any(isinstance(m, ast.BinOp) and isinstance(m.op, ast.Pow) for m in ast.walk(n))

        if not _reads_data(node.right):
            if has_power(node.right):
                raise self._beyond("nested powers (a power in the exponent of a power)")
            e = _constant_value(node.right)
            if e is None:
                raise self._beyond(f"exponent {ast.unparse(node.right)!r} is not a number")
            if abs(e) > MAX_EXPONENT:
                raise self._beyond(f"exponent {e:g} (at most {MAX_EXPONENT} in magnitude)")
        if not _reads_data(node.left) and has_power(node.left):
            raise self._beyond("nested powers of constants (a power of a power)")

    def _check_pad_target(self, node: ast.Call) -> None:
        from .batching import above_cap

        target = (
            node.args[1]
            if len(node.args) > 1
            else next((kw.value for kw in node.keywords if kw.arg == "target"), None)
        )
        n = None if target is None else _constant_number(target)
        if target is not None and n is None and not _reads_data(target):
            raise self._beyond("a computed pad_none target (write the number)")
        if n is not None and (why := above_cap(int(n))) is not None:
            raise self._beyond(f"pad_none to {why}")

    def _check(self, node: ast.AST) -> None:
        """Walk the tree once, at load: refuse what is not whitelisted and collect the names it reads."""
        if self._bounded:
            self._check_bounds(node)
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, bool, str, type(None))):
                raise self._refuse(f"constant {node.value!r}")
        elif isinstance(node, ast.Name):
            self._check_name(node)
        elif isinstance(node, ast.Attribute):
            self._module_attr(node, constant=True)
        elif isinstance(node, ast.Call):
            self._check_call(node)
        else:
            for child in self._operands(node):
                self._check(child)

    def _check_name(self, node: ast.Name) -> None:
        if node.id.startswith("_") and node.id not in {"_label_"}:
            raise self._refuse(f"name {node.id!r}")
        if node.id in _MODULES:
            raise self._refuse(f"bare module {node.id!r}")
        if node.id not in {"True", "False", "None"}:
            self.names.add(node.id)

    def _check_call(self, node: ast.Call) -> None:
        """Only ``module.function(...)`` of a whitelisted function, with plain (not unpacked) arguments."""
        if not isinstance(node.func, ast.Attribute):
            raise self._refuse("calling anything but np./ak./math. functions")
        self._module_attr(node.func, constant=False)
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self._refuse("*args")
            self._check(a)
        for kw in node.keywords:
            if kw.arg is None:
                raise self._refuse("**kwargs")
            self._check(kw.value)

    def _operands(self, node: ast.AST) -> Sequence[ast.AST]:
        """The sub-expressions of an operator or container node, once its operator is allowed; any other
        node type is refused."""
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self._refuse(f"operator {type(node.op).__name__}")
            return (node.left, node.right)
        if isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise self._refuse(f"operator {type(node.op).__name__}")
            return (node.operand,)
        if isinstance(node, ast.BoolOp):
            return node.values
        if isinstance(node, ast.Compare):
            if any(type(op) not in _COMPARE for op in node.ops):
                raise self._refuse("this comparison")
            return (node.left, *node.comparators)
        if isinstance(node, ast.IfExp):
            return (node.test, node.body, node.orelse)
        if isinstance(node, (ast.Tuple, ast.List)):
            return node.elts
        if isinstance(node, ast.Subscript):
            return (node.value, node.slice)
        if isinstance(node, ast.Slice):
            return [part for part in (node.lower, node.upper, node.step) if part is not None]
        raise self._refuse(type(node).__name__)

    def _module_attr(self, node: ast.Attribute, constant: bool) -> None:
        if not isinstance(node.value, ast.Name) or node.value.id not in _MODULES:
            raise self._refuse(f"attribute access {ast.unparse(node)!r}")
        _, funcs, consts = _MODULES[node.value.id]
        allowed = consts if constant else funcs
        if node.attr.startswith("_") or node.attr not in allowed:
            kind = "constant" if constant else "function"
            raise self._refuse(f"{kind} {node.value.id}.{node.attr}")

    def __call__(self, lookup: Mapping[str, Any] | Callable[[str], Any]) -> Any:
        get = lookup.__getitem__ if isinstance(lookup, Mapping) else lookup
        return _Interpreter(get).visit(self._tree)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


class _Interpreter:
    def __init__(self, get: Callable[[str], Any]) -> None:
        self.get = get

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return (
                {"True": True, "False": False, "None": None}.get(node.id)
                if node.id in {"True", "False", "None"}
                else self.get(node.id)
            )
        if isinstance(node, ast.Attribute):
            return getattr(_MODULES[node.value.id][0], node.attr)  # type: ignore[attr-defined]
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](self.visit(node.left), self.visit(node.right))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self.visit(node.operand))
        if isinstance(node, ast.BoolOp):
            fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = self.visit(node.values[0])
            for v in node.values[1:]:
                out = fn(out, self.visit(v))
            return out
        if isinstance(node, ast.Compare):
            left, out = self.visit(node.left), None
            for op, comp in zip(node.ops, node.comparators):
                right = self.visit(comp)
                res = _COMPARE[type(op)](left, right)
                out = res if out is None else np.logical_and(out, res)
                left = right
            return out
        if isinstance(node, ast.IfExp):
            return np.where(self.visit(node.test), self.visit(node.body), self.visit(node.orelse))
        if isinstance(node, ast.Call):
            fn = getattr(_MODULES[node.func.value.id][0], node.func.attr)  # type: ignore[attr-defined]
            args = [self.visit(a) for a in node.args]
            kwargs = {str(kw.arg): self.visit(kw.value) for kw in node.keywords}
            return fn(*args, **kwargs)
        if isinstance(node, ast.Tuple):
            return tuple(self.visit(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [self.visit(e) for e in node.elts]
        if isinstance(node, ast.Subscript):
            return self.visit(node.value)[self.visit(node.slice)]
        if isinstance(node, ast.Slice):
            return slice(*(None if p is None else self.visit(p) for p in (node.lower, node.upper, node.step)))
        raise AssertionError(f"unchecked node {type(node).__name__}")  # pragma: no cover
