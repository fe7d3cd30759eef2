"""How JSON values map to DuckDB column types, and the checks that refuse a value a column cannot hold.

A key whose values are all integers is BIGINT (HUGEINT beyond it), all numbers DOUBLE, all booleans
BOOLEAN, all objects or arrays JSON, all null NULL_TYPE; any other key (strings, or values of several
kinds) is VARCHAR, holding a string as itself and any other value as its JSON text. A column whose
values change kind later is widened without loss (`widen`).
"""

from iterable_assets.load.sql import sql_string

NULL_TYPE = '"NULL"'  # a key whose values are all null
# When a value, given as its JSON text {t}, is held as it is by each column type, narrowest first
# (VARCHAR holds anything). A number column holds a text that passes its guard and casts to its
# type: the cast fails on strings (quoted), booleans and nested values, and the integer guard
# refuses fractions and exponents (yyjson writes every non-integer number with one of them).
INTEGRAL = "NOT (contains({t}, '.') OR contains({t}, 'e') OR contains({t}, 'E'))"
NUMBER_GUARDS = {"BIGINT": INTEGRAL, "HUGEINT": INTEGRAL, "DOUBLE": "TRUE"}
HOLDS = {
    NULL_TYPE: "FALSE",
    **{kind: f"{guard} AND TRY_CAST({{t}} AS {kind}) IS NOT NULL" for kind, guard in NUMBER_GUARDS.items()},
    "BOOLEAN": "{t} IN ('true', 'false')",
    "JSON": "(starts_with({t}, '{{') OR starts_with({t}, '['))",
}
NUMBER_TYPES = tuple(NUMBER_GUARDS)  # each holds the values of the ones before it
KIND_MISMATCH = "iterable_assets: a value its column type does not hold"  # the error `checked` raises
EXPORT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S %z"  # how exports write a timestamp: '2021-04-14 16:48:01 +00:00'


def text_timestamp(text: str, strict: bool = True) -> str:
    """SQL: a timestamp sent as text (an export's format, or ISO 8601) as TIMESTAMPTZ. Text that is
    neither fails the query when `strict`, else gives NULL."""
    cast = "CAST" if strict else "TRY_CAST"
    return f"COALESCE(try_strptime({text}, '{EXPORT_TIME_FORMAT}'), {cast}({text} AS TIMESTAMPTZ))"


def holds(duck_type: str, text: str) -> str:
    """SQL: whether a column of `duck_type` holds, as it is, the value whose JSON text is `text`."""
    return HOLDS[duck_type].format(t=text)


def narrowest(types: frozenset) -> str:
    """The narrowest of the column types that hold every value of a key (VARCHAR if none does)."""
    return next((duck_type for duck_type in HOLDS if duck_type in types), "VARCHAR")


def widen(current: str, incoming: str) -> str:
    """The type of a column that holds values of both types (a table column and a new batch)."""
    if incoming in (current, NULL_TYPE):
        return current
    if current == NULL_TYPE:
        return incoming
    if current in NUMBER_TYPES and incoming in NUMBER_TYPES:
        return max(current, incoming, key=NUMBER_TYPES.index)
    return "VARCHAR"


def checked(key: str, duck_type: str, value: str) -> str:
    """SQL: `value` (read as JSON, or as VARCHAR for a VARCHAR column) as `duck_type`, failing the
    query with KIND_MISMATCH when the column does not hold it. DuckDB's own reader would cast 2.5 to
    2 in an integer column instead."""
    if duck_type == "VARCHAR":
        return value
    text = f"{value}::VARCHAR"
    mismatch = f"error({sql_string(f'{KIND_MISMATCH}: {key} ({duck_type})')})"
    if duck_type in NUMBER_GUARDS:  # `holds`, with one cast: failing (a string, a boolean, too large) is the mismatch
        guard = NUMBER_GUARDS[duck_type].format(t=text)
        converted = f"COALESCE(TRY_CAST({text} AS {duck_type}), {mismatch})"
        return f"CASE WHEN {value} IS NULL THEN NULL WHEN {guard} THEN {converted} ELSE {mismatch} END"
    converted = f"{text} = 'true'" if duck_type == "BOOLEAN" else value
    return f"CASE WHEN {value} IS NULL THEN NULL WHEN {holds(duck_type, text)} THEN {converted} ELSE {mismatch} END"
