"""Asset checks on every table, built from the catalog. They run after each materialization (a job
or backfill that selects a table runs its checks too) and can be executed alone from the UI. Each
reads the table as it is now, so a change made by hand shows at the next check. Each kind of
check is one step for all the tables it covers (a step per table and check would cost a second
or so each)."""

import functools
from typing import Callable

import dagster as dg

from iterable_assets.catalog.kinds import Stream
from iterable_assets.catalog.settings import Settings
from iterable_assets.catalog.streams import PROJECT_TYPES
from iterable_assets.load import audit, erasure, warehouse
from iterable_assets.orchestration.freshness import CHECK_NAME, EXPORT_MAX_AGE_DAYS, latest_day_result
from iterable_assets.orchestration.project import IterableProject

ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
Result = Callable[..., dict]  # (connection, stream) -> the AssetCheckResult's passed, severity, description, metadata


def _keyed(con, stream: Stream, settings: Settings) -> Stream:
    """The stream with the key of this project's type: the setting, else as the last run found it."""
    project_type = settings.project_type
    if project_type == "auto":
        project_type = erasure.recorded_project_type(con, stream.schema) or PROJECT_TYPES[0]
    return stream.for_project(project_type)


def _unique_key(con, stream: Stream, settings: Settings) -> dict:
    stream = _keyed(con, stream, settings)
    key = ", ".join(stream.primary_key)
    found = audit.duplicate_keys(con, stream)
    return dict(
        passed=found.keys == 0,
        severity=ERROR,
        description=f"{found.keys} duplicated ({key}) value(s) in {found.rows} rows"
        + (f", e.g. {found.example}" if found.example else ""),
        metadata={"duplicated_keys": found.keys, "rows_with_duplicated_keys": found.rows, "key": key},
    )


def _key_present(con, stream: Stream, settings: Settings) -> dict:
    stream = _keyed(con, stream, settings)
    key = ", ".join(stream.primary_key)
    missing = audit.missing_keys(con, stream)
    return dict(
        passed=missing == 0,
        severity=ERROR,
        description=f"{missing} row(s) without ({key})" if missing else f"every row has ({key})",
        metadata={"rows_without_key": missing, "key": key},
    )


def _forgotten_absent(con, stream: Stream) -> dict:
    rows = erasure.forgotten_rows(con, stream)
    listed = erasure.current_hashes(con, stream.schema)
    return dict(
        passed=rows == 0,
        severity=ERROR,
        description=f"{rows} row(s) name a user Iterable forgot" if rows else
        f"no row names any of the {listed} user(s) Iterable lists as forgotten",
        metadata={"rows_of_forgotten_users": rows, "forgotten_users": listed},
    )  # fmt: skip


def _key_text(stream: Stream) -> str:
    """The key a check description names: per project type where it differs."""
    text = f"({', '.join(stream.primary_key)})"
    if stream.keys_by_project_type:
        others = "; ".join(f"({', '.join(key)}) in {t} projects" for t, key in stream.keys_by_project_type.items())
        text += f" in email-based projects; {others}"
    return text


def _days_complete(con, stream: Stream) -> dict:
    coverage = audit.day_coverage(con, stream)
    problems = [f"{len(coverage.missing)} day(s) never loaded"] if coverage.missing else []
    problems += [f"{day}: {now} rows, the load left {then}" for day, then, now in coverage.changed]
    return dict(
        passed=not problems,
        severity=ERROR,
        description="; ".join(problems) or f"every day from {coverage.first} to {coverage.last} loaded",
        metadata={
            "first_day": str(coverage.first),
            "last_day": str(coverage.last),
            "days_loaded": len(coverage.days),
            "missing_days": ", ".join(map(str, coverage.missing)),
            "changed_days": ", ".join(str(day) for day, _, _ in coverage.changed),
        },
    )


def _no_rejected_lines(con, stream: Stream) -> dict:
    rejected = audit.rejected_lines(con, stream)
    where = f"SELECT * FROM {warehouse.own_table(stream.schema, warehouse.REJECTS)} WHERE stream = '{stream.name}'"
    return dict(
        passed=rejected == 0,
        severity=WARN,
        description=f"{rejected} line(s) set aside: {where}" if rejected else "no line set aside",
        metadata={"rejected_lines": rejected, "query": dg.MetadataValue.md(f"`{where}`")},
    )


def _days_not_emptied(con, stream: Stream, percent: float, severity: str) -> dict:
    shrunk = audit.shrunk_days(con, stream, percent)
    named = [f"{day}: {before} -> {after} rows" for day, before, after in shrunk]
    description = f"no load took a day to 0 rows or down by more than {percent:g} %"
    if shrunk:
        listed = "; ".join(named[:10]) + ("; ..." if len(named) > 10 else "")
        description = f"{len(shrunk)} day(s) emptied or down by more than {percent:g} % at their last load: {listed}"
    return dict(
        passed=not shrunk,
        severity=dg.AssetCheckSeverity(severity),
        description=description,
        metadata={"days_shrunk": len(shrunk), "shrunk": "\n".join(named), "shrink_alert_percent": percent},
    )


def _kinds(settings: Settings) -> dict[str, tuple[Callable[[Stream], bool], Callable[[Stream], str], Result]]:
    """name -> (which tables it covers, what it says, how it is evaluated)"""
    percent, severity = settings.shrink_alert_percent, settings.shrink_alert_severity
    return {
        "primary_key_unique": (
            lambda s: bool(s.primary_key),
            lambda s: (
                f"ERROR when two rows share their key, the key a sync replaces rows by: {_key_text(s)}. "
                "A row without a key holds none (see primary_key_present)."
            ),
            functools.partial(_unique_key, settings=settings),
        ),
        "primary_key_present": (
            lambda s: bool(s.primary_key),
            lambda s: f"ERROR when rows have no key: {_key_text(s)}.",
            functools.partial(_key_present, settings=settings),
        ),
        "forgotten_users_absent": (
            lambda s: bool(s.identity_columns),
            lambda s: (
                "ERROR when a row names a user Iterable forgot (GDPR): its email or userId hashes to one "
                "of the hashes Iterable lists (iterable._forgotten)."
            ),
            _forgotten_absent,
        ),
        "days_complete": (
            lambda s: s.write == "window",
            lambda s: (
                "ERROR when a day between the first and the last day loaded was never loaded, or when a loaded "
                "day's rows changed since its load (deleted or added outside a sync)."
            ),
            _days_complete,
        ),
        "no_rejected_lines": (
            lambda s: s.reads_json,
            lambda s: (
                f"WARN when lines of a response were not JSON records: they are kept verbatim in "
                f"{warehouse.own_table(s.schema, warehouse.REJECTS)} (stream = '{s.name}'), and the rest loaded."
            ),
            _no_rejected_lines,
        ),
        CHECK_NAME: (
            lambda s: s.write == "window",
            lambda s: f"WARN when the latest day loaded is more than {EXPORT_MAX_AGE_DAYS} days old (UTC).",
            latest_day_result,
        ),
        "days_not_emptied": (
            lambda s: s.write == "window",
            lambda s: (
                f"{severity} when a reload takes a day that had rows down to 0, or by more than {percent:g} % "
                "(ITERABLE_SHRINK_ALERT_PERCENT): more often a wrong key, project or data center, or an incident "
                "at Iterable, than users Iterable deleted. Nothing is refused: the day holds what Iterable sent."
            ),
            functools.partial(_days_not_emptied, percent=percent, severity=severity),
        ),
    }


def _build(name: str, covers, describe, evaluate: Result, project: IterableProject) -> dg.AssetChecksDefinition:
    by_key = {project.key(s): s for s in project.streams if covers(s)}

    warehouse_key = project.resource_keys[1]

    @dg.multi_asset_check(
        name=project.name(f"iterable_{name}"),
        specs=[dg.AssetCheckSpec(name, asset=key, description=describe(s)) for key, s in by_key.items()],
        can_subset=True,
        required_resource_keys={warehouse_key},
    )
    def _check(context: dg.AssetCheckExecutionContext):
        with warehouse.connect(getattr(context.resources, warehouse_key).destination) as con:
            for key in sorted(context.selected_asset_check_keys, key=lambda k: k.asset_key.to_user_string()):
                result = evaluate(con, by_key[key.asset_key])
                yield dg.AssetCheckResult(asset_key=key.asset_key, check_name=name, **result)

    return _check


def _reconciles(project: IterableProject, metrics: Stream) -> dg.AssetChecksDefinition:
    """The campaign metrics against the events loaded: per campaign, each event table's rows against
    Iterable's total for it, where the table has every day of the metrics' span loaded."""
    tolerance_percent = project.settings.reconcile_tolerance_percent
    tables = {s.name: s for s in project.streams if s.name in dict(metrics.reconcile)}
    pairs = ", ".join(f"{table} rows vs '{metric}'" for table, metric in metrics.reconcile if table in tables)

    warehouse_key = project.resource_keys[1]

    @dg.asset_check(
        asset=project.key(metrics),
        name="reconciles_with_events",
        required_resource_keys={warehouse_key},
        additional_deps=[project.key(t) for t in tables.values()],  # in a run that loads them too, after them
        description=f"ERROR when a campaign's loaded events differ from Iterable's totals by more than "
        f"{tolerance_percent:g} %: {pairs} (totals, not the unique metrics). Campaigns whose span is not "
        "loaded in full are left out, and said so.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with warehouse.connect(getattr(context.resources, warehouse_key).destination) as con:
            compared, skipped = audit.reconcile(con, metrics, tables)
        off = [c for c in compared if abs(c.differs_by()) > tolerance_percent]
        named = [f"campaign {c.campaign}: {c.loaded} {c.table} rows, Iterable's {c.metric} {c.iterable:g}" for c in off]
        campaigns = {c.campaign for c in compared}
        summary = f"{len(campaigns)} campaign(s) reconciled, {len(skipped)} left out (their days not all loaded)"
        return dg.AssetCheckResult(
            passed=not off,
            severity=ERROR,
            description="; ".join(named) if off else summary,
            metadata={
                "campaigns_compared": len(campaigns),
                "campaigns_differing": len({c.campaign for c in off}),
                "differing": "\n".join(named),
                "campaigns_left_out": len(skipped),
                "left_out": "\n".join(f"campaign {c}: {'; '.join(why)}" for c, why in sorted(skipped.items())[:20]),
                "tolerance_percent": tolerance_percent,
            },
        )

    return _check


def build_checks(project: IterableProject) -> list[dg.AssetChecksDefinition]:
    """Key uniqueness and presence where a table has a key, day coverage, shrinkage and freshness for
    window (export) tables, rejected lines for tables read as JSON, forgotten users where rows belong
    to users, and the campaign metrics against the events. (Column types are checked in the asset's
    own step; the other tables' freshness is a FreshnessPolicy.)"""
    checks = [
        _build(name, covers, describe, evaluate, project)
        for name, (covers, describe, evaluate) in _kinds(project.settings).items()
        if any(covers(s) for s in project.streams)
    ]
    names = {s.name for s in project.streams}
    for stream in project.streams:  # the tables whose rows are reconciled with the events
        if any(table in names for table, _ in getattr(stream, "reconcile", ())):
            checks.append(_reconciles(project, stream))
    return checks
