"""ITERABLE_DESTINATION=postgres: every table loads into Postgres exactly as into DuckDB, with the same
ledger, rejects, deletions, checks and metadata."""

from .helpers import assert_exact, full_sync


def test_a_sync_of_the_sixteen_into_postgres_is_exact_and_again_exact(pg_project):
    assert all(r.success for r in full_sync(pg_project))
    assert_exact(pg_project)
    assert all(r.success for r in full_sync(pg_project))
    assert_exact(pg_project)
