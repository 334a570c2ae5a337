"""Column expressions: immutable trees, type-checked against a schema when a plan is built.

An expression is compiled to a Polars expression only by the executor; building one never
touches data. ``check(schema)`` raises :class:`~streamkit.errors.PlanError` subclasses with
the column and types involved, so mistakes surface at plan-build time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from streamkit import dtypes as T
from streamkit.errors import ColumnNotFoundError, SchemaError
from streamkit.like_pattern import like_regex

IntoExpr = Any
"""An ``Expr`` or a plain Python value (taken as a literal)."""


def into_expr(value: IntoExpr) -> Expr:
    """Wrap a plain value as a literal; pass expressions through."""
    return value if isinstance(value, Expr) else Lit(value)


def into_col(value: str | Expr) -> Expr:
    """A column name (``str``) becomes a column reference; expressions pass through."""
    return Col(value) if isinstance(value, str) else value


class Expr:
    """Base of all expressions. Operators build new expressions; nothing is evaluated."""

    def to_polars(self) -> pl.Expr:
        """The equivalent Polars expression (used only by the executor)."""
        raise NotImplementedError

    def check(self, schema: pl.Schema) -> pl.DataType:
        """Validate against ``schema`` and return the result type; raises PlanError."""
        self._check_tree(schema)
        frame = pl.DataFrame(schema=schema).lazy().select(self.to_polars().alias("_"))
        return frame.collect_schema()["_"]

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        raise NotImplementedError

    @property
    def output_name(self) -> str:
        """The column name this expression produces."""
        raise NotImplementedError

    def columns(self) -> set[str]:
        """Names of the input columns referenced."""
        raise NotImplementedError

    # -- builders ---------------------------------------------------------------------------
    def alias(self, name: str) -> Expr:
        """Name the result."""
        return Alias(self, name)

    def cast(self, dtype: Any) -> Expr:
        """Convert to ``dtype`` (Arrow type, Polars type, or a name like ``"float64"``)."""
        return Cast(self, T.to_polars_dtype(dtype))

    def is_null(self) -> Expr:
        """True where the value is null."""
        return Unary("is_null", self)

    def is_not_null(self) -> Expr:
        """True where the value is not null."""
        return Unary("is_not_null", self)

    def get_field(self, name: str) -> Expr:
        """Field ``name`` of a struct column, e.g. ``col("window").get_field("start")``."""
        return Field(self, name)

    getField = get_field

    def like(self, pattern: str, escape: str = "\\") -> Expr:
        """Spark's ``LIKE``: the whole string matches ``pattern`` (``%`` any characters,
        ``_`` one); null for a null string."""
        return Match(self, pattern, "like", escape)

    def ilike(self, pattern: str, escape: str = "\\") -> Expr:
        """``like`` ignoring case."""
        return Match(self, pattern, "ilike", escape)

    def rlike(self, pattern: str) -> Expr:
        """Spark's ``RLIKE``: the regular expression is found somewhere in the string."""
        return Match(self, pattern, "rlike")

    def isin(self, *values: IntoExpr) -> Expr:
        """Equal to one of ``values`` (SQL ``IN``: null when none is equal and one is null)."""
        items = values[0] if len(values) == 1 and isinstance(values[0], list | tuple) else values
        if not items:
            raise SchemaError("isin() needs at least one value")
        out: Expr | None = None
        for v in items:
            test = BinOp("==", self, into_expr(v))
            out = test if out is None else BinOp("|", out, test)
        assert out is not None
        return out

    def between(self, low: IntoExpr, high: IntoExpr) -> Expr:
        """``low <= self <= high`` (SQL ``BETWEEN``)."""
        return BinOp("&", BinOp(">=", self, into_expr(low)), BinOp("<=", self, into_expr(high)))

    def __add__(self, other: IntoExpr) -> Expr:
        return BinOp("+", self, into_expr(other))

    def __radd__(self, other: IntoExpr) -> Expr:
        return BinOp("+", into_expr(other), self)

    def __sub__(self, other: IntoExpr) -> Expr:
        return BinOp("-", self, into_expr(other))

    def __rsub__(self, other: IntoExpr) -> Expr:
        return BinOp("-", into_expr(other), self)

    def __mul__(self, other: IntoExpr) -> Expr:
        return BinOp("*", self, into_expr(other))

    def __rmul__(self, other: IntoExpr) -> Expr:
        return BinOp("*", into_expr(other), self)

    def __truediv__(self, other: IntoExpr) -> Expr:
        return BinOp("/", self, into_expr(other))

    def __rtruediv__(self, other: IntoExpr) -> Expr:
        return BinOp("/", into_expr(other), self)

    def __floordiv__(self, other: IntoExpr) -> Expr:
        return BinOp("//", self, into_expr(other))

    def __mod__(self, other: IntoExpr) -> Expr:
        return BinOp("%", self, into_expr(other))

    def __neg__(self) -> Expr:
        return Unary("neg", self)

    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        return BinOp("==", self, into_expr(other))

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
        return BinOp("!=", self, into_expr(other))

    def __lt__(self, other: IntoExpr) -> Expr:
        return BinOp("<", self, into_expr(other))

    def __le__(self, other: IntoExpr) -> Expr:
        return BinOp("<=", self, into_expr(other))

    def __gt__(self, other: IntoExpr) -> Expr:
        return BinOp(">", self, into_expr(other))

    def __ge__(self, other: IntoExpr) -> Expr:
        return BinOp(">=", self, into_expr(other))

    def __and__(self, other: IntoExpr) -> Expr:
        return BinOp("&", self, into_expr(other))

    def __rand__(self, other: IntoExpr) -> Expr:
        return BinOp("&", into_expr(other), self)

    def __or__(self, other: IntoExpr) -> Expr:
        return BinOp("|", self, into_expr(other))

    def __ror__(self, other: IntoExpr) -> Expr:
        return BinOp("|", into_expr(other), self)

    def __invert__(self) -> Expr:
        return Unary("not", self)

    def __bool__(self) -> bool:
        raise TypeError(
            "an expression has no truth value; combine conditions with & | ~ instead of "
            "and / or / not, and wrap each comparison in parentheses"
        )

    __hash__ = object.__hash__


@dataclass(frozen=True, eq=False)
class Col(Expr):
    """A reference to an input column."""

    name: str

    def to_polars(self) -> pl.Expr:
        return pl.col(self.name)

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        if self.name not in schema:
            raise ColumnNotFoundError(self.name, schema.names())
        return schema[self.name]

    @property
    def output_name(self) -> str:
        return self.name

    def columns(self) -> set[str]:
        return {self.name}

    def __repr__(self) -> str:
        return f"col({self.name!r})"


@dataclass(frozen=True, eq=False)
class Lit(Expr):
    """A constant."""

    value: Any

    def to_polars(self) -> pl.Expr:
        return pl.lit(self.value)

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        return pl.select(pl.lit(self.value)).dtypes[0]

    @property
    def output_name(self) -> str:
        return "literal"

    def columns(self) -> set[str]:
        return set()

    def __repr__(self) -> str:
        return f"lit({self.value!r})"


_ARITH = {"+", "-", "*", "/", "//", "%"}
_COMPARE = {"==", "!=", "<", "<=", ">", ">="}
_LOGIC = {"&", "|"}


def _kind(dtype: pl.DataType) -> str:
    if T.is_numeric(dtype):
        return "numeric"
    if T.is_stringlike(dtype):
        return "string"
    if T.is_boolean(dtype):
        return "boolean"
    if dtype.is_temporal():
        return "temporal"
    if isinstance(dtype, pl.Null):
        return "null"
    return str(dtype)


@dataclass(frozen=True, eq=False)
class BinOp(Expr):
    """Arithmetic, comparison or boolean logic on two operands."""

    op: str
    left: Expr
    right: Expr

    _POLARS: ClassVar[dict[str, str]] = {
        "+": "add", "-": "sub", "*": "mul", "/": "truediv", "//": "floordiv", "%": "mod",
        "==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge",
        "&": "and_", "|": "or_",
    }  # fmt: skip

    def to_polars(self) -> pl.Expr:
        method = getattr(self.left.to_polars(), self._POLARS[self.op])
        result: pl.Expr = method(self.right.to_polars())
        return result

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        lt, rt = self.left._check_tree(schema), self.right._check_tree(schema)
        lk, rk = _kind(lt), _kind(rt)
        ok = "null" in (lk, rk)
        if self.op in _ARITH:
            ok = ok or (lk == rk == "numeric") or (lk == "temporal" and self.op in "+-")
            ok = ok or (self.op == "+" and lk == rk == "string")
        elif self.op in _COMPARE:
            ok = ok or lk == rk
        else:
            ok = ok or lk == rk == "boolean"
        if not ok:
            raise SchemaError(
                f"cannot apply {self.op!r} to {self._describe(self.left, lt)} and "
                f"{self._describe(self.right, rt)}; {self._hint()}"
            )
        if self.op in _COMPARE or self.op in _LOGIC:
            return pl.Boolean()
        return rt if lk == "null" else lt

    @staticmethod
    def _describe(e: Expr, t: pl.DataType) -> str:
        return f"{e!r} of type {T.describe(t)}"

    def _hint(self) -> str:
        if self.op in _LOGIC:
            return "& and | need boolean operands (comparisons or boolean columns)"
        if self.op in _COMPARE:
            return "compare values of the same kind; use .cast(...) or sk.to_timestamp(...)"
        return "arithmetic needs numeric operands; use .cast('float64') to convert"

    @property
    def output_name(self) -> str:
        return self.left.output_name

    def columns(self) -> set[str]:
        return self.left.columns() | self.right.columns()

    def __repr__(self) -> str:
        return f"({self.left!r} {self.op} {self.right!r})"


@dataclass(frozen=True, eq=False)
class Unary(Expr):
    """Negation, boolean not, and null tests."""

    op: str
    operand: Expr

    def to_polars(self) -> pl.Expr:
        inner = self.operand.to_polars()
        if self.op == "neg":
            return -inner
        if self.op == "not":
            return ~inner
        if self.op == "is_null":
            return inner.is_null()
        return inner.is_not_null()

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        t = self.operand._check_tree(schema)
        if self.op == "neg" and not T.is_numeric(t):
            raise SchemaError(f"cannot negate {self.operand!r} of type {t}; it is not numeric")
        if self.op == "not" and not T.is_boolean(t):
            raise SchemaError(f"~ needs a boolean operand; {self.operand!r} has type {t}")
        return pl.Boolean() if self.op.startswith("is_") else t

    @property
    def output_name(self) -> str:
        return self.operand.output_name

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"{self.op}({self.operand!r})"


@dataclass(frozen=True, eq=False)
class Cast(Expr):
    """Type conversion (strict: values that cannot convert raise at execution)."""

    operand: Expr
    dtype: pl.DataType

    def to_polars(self) -> pl.Expr:
        return self.operand.to_polars().cast(self.dtype)

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        self.operand._check_tree(schema)
        return self.dtype

    @property
    def output_name(self) -> str:
        return self.operand.output_name

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"cast({self.operand!r} as {self.dtype})"


@dataclass(frozen=True, eq=False)
class Alias(Expr):
    """Renames the result of an expression."""

    operand: Expr
    name: str

    def to_polars(self) -> pl.Expr:
        return self.operand.to_polars().alias(self.name)

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        return self.operand._check_tree(schema)

    @property
    def output_name(self) -> str:
        return self.name

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"{self.operand!r} AS {self.name}"


@dataclass(frozen=True, eq=False)
class Field(Expr):
    """Field ``name`` of a struct column (``window.start``); null where the struct is."""

    operand: Expr
    name: str

    def to_polars(self) -> pl.Expr:
        return self.operand.to_polars().struct.field(self.name)

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        t = self.operand._check_tree(schema)
        if not isinstance(t, pl.Struct):
            raise SchemaError(
                f"{self.operand!r} has type {T.describe(t)}, not a struct: it has no field "
                f"{self.name!r}"
            )
        fields = {f.name: f.dtype for f in t.fields}
        if self.name not in fields:
            raise SchemaError(
                f"{self.operand!r} has no field {self.name!r}; its fields are {sorted(fields)}"
            )
        dtype = fields[self.name]
        return dtype() if isinstance(dtype, type) else dtype

    @property
    def output_name(self) -> str:
        return self.name

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"{self.operand!r}.{self.name}"


@dataclass(frozen=True, eq=False)
class Match(Expr):
    """``LIKE`` (``like``: whole string against a SQL pattern, ``ilike`` ignoring case)
    or ``RLIKE`` (``rlike``: a regular expression found anywhere in the string, as Java's
    ``Matcher.find``); null for a null string."""

    operand: Expr
    pattern: str
    kind: str
    """``like``, ``ilike`` or ``rlike``."""
    escape: str = "\\"

    @property
    def regex(self) -> str:
        """The regular expression Polars runs."""
        if self.kind == "rlike":
            return self.pattern
        regex = like_regex(self.pattern, self.escape)
        return "(?i)" + regex if self.kind == "ilike" else regex

    def to_polars(self) -> pl.Expr:
        return self.operand.to_polars().str.contains(self.regex)

    def _check_tree(self, schema: pl.Schema) -> pl.DataType:
        t = self.operand._check_tree(schema)
        if not isinstance(t, pl.String | pl.Null):
            raise SchemaError(
                f"{self.kind} needs strings; {self.operand!r} has type {T.describe(t)}; "
                "use .cast('string') first"
            )
        try:
            pl.select(pl.lit("", dtype=pl.String).str.contains(self.regex))
        except pl.exceptions.PolarsError as e:
            raise SchemaError(f"{self.kind} pattern {self.pattern!r} is invalid: {e}") from e
        return pl.Boolean()

    @property
    def output_name(self) -> str:
        return self.operand.output_name

    def columns(self) -> set[str]:
        return self.operand.columns()

    def __repr__(self) -> str:
        return f"{self.kind}({self.operand!r}, {self.pattern!r})"
