"""Message filters evaluated in the broker: SQL92 property filters (``expressionType`` SQL92)."""
from __future__ import annotations

from rmq_broker.filter.sql92 import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_IN_LIST,
    Sql92EvalError,
    Sql92Filter,
    Sql92FilterCache,
    Sql92ParseError,
    compile_sql92,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_IN_LIST",
    "Sql92EvalError",
    "Sql92Filter",
    "Sql92FilterCache",
    "Sql92ParseError",
    "compile_sql92",
]
