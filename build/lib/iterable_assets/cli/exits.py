"""The exit codes of every command (the README's table), and the error for an option that cannot be used."""

import enum


class Exit(enum.IntEnum):
    """The exit codes of every command (the README's table)."""

    OK = 0
    FAILED = 1  # a table failed to load (its message says why)
    BAD_INPUT = 2  # a setting (ITERABLE_*) or a command-line option is not valid
    UNREACHABLE = 3  # ITERABLE_BASE_URL answered nothing: a wrong host, or no network
    CANNOT_EXPORT = 4  # the key reads resources but may not export (check)
    KEY_REFUSED = 5  # Iterable refused the key: HTTP 401 (or 403)
    CHECK_FAILED = 6  # a check of severity ERROR failed (status)
    STALE = 7  # a table is stale (status)


class UsageError(Exception):
    """A command-line option that cannot be used as given."""
