"""The audience rule language: a small, safe expression language compiled to Polars.

A rule reads like ``churn_risk > 0.6 and clv > 200 and consent.email``::

    rule    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := value (op value)* | value ["not"] "in" "[" literal, ... "]"
             | value "is" ["not"] "null"
    op      := < | <= | > | >= | == | !=
    value   := field | number | 'string' | "string" | true | false | null | "(" rule ")"
    field   := name ("." name)*          e.g. orders, consent.email, engagement.email

The grammar is a subset of Python's expression syntax, so the text is parsed by the standard
library's :func:`ast.parse` (a well-kept parser) and the tree is then walked with a whitelist:
any other node (calls, subscripts, arithmetic, lambdas, comprehensions) is refused with the
position. Nothing is ever evaluated as Python. Fields are checked against the known fields and
their types at compile time; a comparison with a missing value (null) is false.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from concierge.errors import InputError

_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_WORDS = {"true": True, "false": False, "null": None}
_NUM = (pl.Int64, pl.Int32, pl.Float64, pl.Float32, pl.UInt32, pl.UInt64, pl.Int8, pl.Int16)
Kind = str  # "number" | "string" | "bool" | "null"


def kind_of(dtype: pl.DataType) -> Kind:
    if dtype == pl.Boolean:
        return "bool"
    if dtype == pl.String:
        return "string"
    if any(dtype == d for d in _NUM):
        return "number"
    return "string"


@dataclass(frozen=True)
class Compiled:
    """A validated rule: its text, the Polars expression and the fields it reads."""

    text: str
    expr: pl.Expr
    fields: frozenset[str]


def _fail(rule: str, reason: str) -> InputError:
    return InputError.one("rule", reason)


def _normalise(text: str) -> str:
    # `is null` / `is not null` read like SQL; Python spells them `is None`
    return re.sub(r"\bis\s+(not\s+)?null\b", lambda m: f"is {m.group(1) or ''}None", text)


def compile_rule(text: str, fields: Mapping[str, pl.DataType]) -> Compiled:
    """Parse and type-check ``text`` against ``fields`` (name → dtype).

    Raises
    ------
    InputError
        On ``rule``: a syntax error (with its column), a construct outside the language, an
        unknown field (with the known ones), or a comparison of mismatched types.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError.one("rule", "a rule is required, e.g. orders >= 2 and consent.email")
    if len(text) > 5000:
        raise InputError.one("rule", "a rule is at most 5,000 characters")
    try:
        tree = ast.parse(_normalise(text.strip()), mode="eval")
    except SyntaxError as exc:
        raise InputError.one(
            "rule", f"syntax error at column {exc.offset or 0}: {exc.msg}"
        ) from None
    used: set[str] = set()
    c = _Compiler(text, fields, used)
    expr, kind = c.node(tree.body)
    if kind != "bool":
        raise InputError.one("rule", "a rule must be a condition (true or false), not a value")
    return Compiled(text, expr.fill_null(False), frozenset(used))


class _Compiler:
    def __init__(self, text: str, fields: Mapping[str, pl.DataType], used: set[str]) -> None:
        self.text, self.fields, self.used = text, fields, used

    def refuse(self, node: ast.AST, what: str) -> InputError:
        col = getattr(node, "col_offset", 0) + 1
        return InputError.one("rule", f"{what} at column {col} is not part of the rule language")

    def field_name(self, node: ast.AST) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        return None

    def node(self, n: ast.AST) -> tuple[pl.Expr, Kind]:
        if isinstance(n, ast.BoolOp):
            parts = [self.cond(v) for v in n.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(n.op, ast.And) else (out | p)
            return out, "bool"
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not):
            return ~self.cond(n.operand), "bool"
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            e, k = self.node(n.operand)
            if k != "number":
                raise InputError.one("rule", "only numbers can be negated")
            return -e, "number"
        if isinstance(n, ast.Compare):
            return self.compare(n), "bool"
        if isinstance(n, ast.Constant):
            v = n.value
            if isinstance(v, bool):
                return pl.lit(v), "bool"
            if v is None:
                return pl.lit(None), "null"
            if isinstance(v, int | float):
                return pl.lit(v), "number"
            if isinstance(v, str):
                return pl.lit(v), "string"
            raise self.refuse(n, f"the literal {v!r}")
        if isinstance(n, ast.Name | ast.Attribute):
            name = self.field_name(n)
            if name is None:
                raise self.refuse(n, "this expression")
            if name not in self.fields:
                if name.lower() in _WORDS:
                    v = _WORDS[name.lower()]
                    return pl.lit(v), "null" if v is None else "bool"
                known = ", ".join(sorted(self.fields))
                raise InputError.one("rule", f"unknown field {name!r}; known fields: {known}")
            self.used.add(name)
            return pl.col(name), kind_of(self.fields[name])
        names = {
            ast.Call: "a function call",
            ast.Subscript: "indexing",
            ast.BinOp: "arithmetic",
            ast.Lambda: "a lambda",
            ast.IfExp: "an if-expression",
        }
        raise self.refuse(n, names.get(type(n), type(n).__name__))

    def cond(self, n: ast.AST) -> pl.Expr:
        e, k = self.node(n)
        if k != "bool":
            raise InputError.one(
                "rule", f"{ast.unparse(n)!r} is a {k}, not a condition; compare it with something"
            )
        return e

    def literal_list(self, n: ast.AST) -> tuple[list[Any], Kind]:
        if not isinstance(n, ast.List | ast.Tuple):
            raise InputError.one("rule", "'in' needs a list of literals, e.g. x in ['a', 'b']")
        vals: list[Any] = []
        kinds: set[Kind] = set()
        for el in n.elts:
            _e, k = self.node(el)
            if not isinstance(el, ast.Constant | ast.UnaryOp):
                raise InputError.one("rule", "'in' lists hold literals only")
            v = el.value if isinstance(el, ast.Constant) else -el.operand.value  # type: ignore[attr-defined]
            vals.append(v)
            kinds.add(k)
        if len(kinds) > 1:
            raise InputError.one("rule", "an 'in' list mixes types")
        return vals, (kinds.pop() if kinds else "null")

    def compare(self, n: ast.Compare) -> pl.Expr:
        left, lk = self.node(n.left)
        out: pl.Expr | None = None
        for op, right_node in zip(n.ops, n.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                vals, vk = self.literal_list(right_node)
                if vk not in (lk, "null") and lk != "null":
                    raise InputError.one("rule", f"comparing a {lk} with a list of {vk}s")
                part = left.is_in(vals)
                part = ~part if isinstance(op, ast.NotIn) else part
                right, rk = left, lk
            elif isinstance(op, ast.Is | ast.IsNot):
                right, rk = self.node(right_node)
                if rk != "null":
                    raise InputError.one("rule", "'is' compares with null only (x is null)")
                part = left.is_null() if isinstance(op, ast.Is) else left.is_not_null()
                # is-null is never null itself
            elif type(op) in _OPS:
                right, rk = self.node(right_node)
                sym = _OPS[type(op)]
                if "null" in (lk, rk):
                    raise InputError.one("rule", "compare with null using 'is null'")
                if lk != rk:
                    raise InputError.one("rule", f"comparing a {lk} with a {rk} ({sym})")
                if lk == "bool" and sym not in ("==", "!="):
                    raise InputError.one("rule", f"true/false values cannot be ordered ({sym})")
                part = {
                    "<": left < right,
                    "<=": left <= right,
                    ">": left > right,
                    ">=": left >= right,
                    "==": left == right,
                    "!=": left != right,
                }[sym]
            else:
                raise self.refuse(n, "this comparison")
            out = part if out is None else (out & part)
            left, lk = right, rk
        assert out is not None
        return out
