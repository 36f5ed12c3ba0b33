"""``qsf health``: is the live pipeline working? The broker answers, the database answers, and a
processor reported to ``pipeline_health`` recently and has committed recently (or has nothing
to commit: no lag). One line either way; for a container's HEALTHCHECK and for people."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from ..kafka import broker_unreachable

LATEST_SQL = """SELECT DISTINCT ON (processor) processor, ts, last_commit, consumer_lag
FROM pipeline_health
WHERE ($1::text IS NULL OR group_id = $1) AND ($2::text IS NULL OR processor LIKE $2 || ':%')
ORDER BY processor, ts DESC"""


@dataclass(frozen=True, kw_only=True)
class HealthCheck:
    """What to check: the broker at ``bootstrap``, the database at ``dsn``, and the processors of
    ``group`` (None: every group) on ``host`` (None: anywhere) against ``max_age_s``."""

    bootstrap: str
    dsn: str
    group: str | None = None
    host: str | None = None
    max_age_s: float = 60.0
    timeout_s: float = 5.0


@dataclass(frozen=True)
class Health:
    ok: bool
    line: str


async def _broker(check: HealthCheck) -> str | None:
    """None when the broker answers a metadata request in time, else why not."""
    why = await broker_unreachable(check.bootstrap, timeout_s=check.timeout_s)
    return None if why is None else f"broker {check.bootstrap} unreachable ({why})"


async def _reports(check: HealthCheck) -> tuple[str | None, list[asyncpg.Record]]:
    """The newest pipeline_health row of each processor checked, or why they cannot be read."""
    try:
        con = await asyncpg.connect(check.dsn, timeout=check.timeout_s)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        return f"database unreachable ({type(exc).__name__})", []
    try:
        return None, await con.fetch(LATEST_SQL, check.group, check.host, timeout=check.timeout_s)
    except asyncpg.UndefinedTableError:
        return None, []  # no processor with the PostgreSQL sink has run on this database yet
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        return f"database: {type(exc).__name__}: {exc}", []
    finally:
        await con.close()


def judge(check: HealthCheck, reports: list, *, now_ns: int) -> Health:
    """Healthy when at least one processor (of the group, on the host) reported within
    ``max_age_s`` and committed within it, or has no lag (nothing to commit); processors gone
    long ago (earlier runs, a member that died) keep their last rows and do not count."""
    who = f"group {check.group}" if check.group else "any group"
    where = f" on {check.host}" if check.host else ""
    if not reports:
        return Health(False, f"unhealthy: no processor of {who}{where} has reported to pipeline_health")

    def ages(r) -> tuple[float, float | None]:
        return (now_ns - r["ts"]) / 1e9, None if r["last_commit"] is None else (now_ns - r["last_commit"]) / 1e9

    def working(r) -> bool:
        reported, committed = ages(r)
        return reported <= check.max_age_s and (
            r["consumer_lag"] == 0 or (committed is not None and committed <= check.max_age_s))

    def desc(r) -> str:
        reported, committed = ages(r)
        done = "never committed" if committed is None else f"committed {committed:.1f} s ago"
        return f"{r['processor']} reported {reported:.1f} s ago, {done}, lag {r['consumer_lag']}"

    ok = [r for r in sorted(reports, key=lambda r: r["processor"]) if working(r)]
    if ok:
        return Health(True, f"healthy: broker {check.bootstrap}, database, {who}{where}: " + "; ".join(map(desc, ok)))
    newest = max(reports, key=lambda r: r["ts"])
    return Health(False, f"unhealthy ({who}{where}, max age {check.max_age_s:g} s): newest report: {desc(newest)}")


async def check_health(check: HealthCheck) -> Health:
    """Broker, database, then the processors' reports."""
    broker_fault, (db_fault, reports) = await asyncio.gather(_broker(check), _reports(check))
    faults = [f for f in (broker_fault, db_fault) if f is not None]
    if faults:
        return Health(False, "unhealthy: " + "; ".join(faults))
    return judge(check, reports, now_ns=time.time_ns())
