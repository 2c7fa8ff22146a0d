"""A restricted evaluator for weaver ``new_variables`` / ``selection`` expressions — configs are data.

The expression is parsed with :mod:`ast` and interpreted node by node: names, literals, arithmetic,
comparisons, boolean logic and calls of whitelisted ``np.`` / ``ak.`` / ``math.`` functions. Nothing is
ever passed to :func:`eval`; attribute access other than ``module.function``, dunders, imports,
lambdas and comprehensions are refused when the config is loaded.
"""

from __future__ import annotations

import ast
import math
import operator
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
        try:
            tree = ast.parse(self.source.strip(), mode="eval")
        except SyntaxError as err:
            raise JetTaggerError(f"{where}: cannot parse {self.source!r}: {err.msg}") from None
        self._tree = tree.body
        self.names: set[str] = set()
        self._check(self._tree)

    def _refuse(self, what: str) -> JetTaggerError:
        return JetTaggerError(f"{self.where}: refused expression {self.source!r}: {what} is not allowed")

    def _check(self, node: ast.AST) -> None:
        """Walk the tree once, at load: refuse what is not whitelisted and collect the names it reads."""
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
