"""SQL text: quoting names and strings for DuckDB."""

from typing import Sequence


def quote(name: str) -> str:
    """A quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(text: str) -> str:
    """A string literal."""
    return "'" + text.replace("'", "''") + "'"


def json_pointer(key: str) -> str:
    """The RFC 6901 pointer to a top-level key (unambiguous, whatever characters the key has)."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


def plain_names(keys: Sequence[str]) -> bool:
    """Whether DuckDB can name a column after each of `keys` (none empty, none equal but for case)."""
    return "" not in keys and len({key.lower() for key in keys}) == len(keys)
