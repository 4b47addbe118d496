"""Background maintenance: plain functions that django-q2 Schedules (or an enqueue) call.

    python manage.py chrono_forge maintenance --install     # registers the three Schedules below

Each takes plain numbers (Schedule arguments are stored as Python literals) and returns what it did.
The Schedules and enqueued calls go to ``CHRONO_FORGE["MAINTENANCE_CLUSTER"]`` when it is set.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django_q.models import Schedule

from . import cleanup as _cleanup
from . import clock, conf, dispatch, operations

logger = logging.getLogger("chrono_forge")

#: name -> (function, schedule type, minutes between runs, description)
SCHEDULES: dict[str, tuple[str, str, int | None, str]] = {
    "reap": (
        "chrono_forge.maintenance.reap",
        "I",
        5,
        "re-enqueue running workflows with a stale lock",
    ),
    "resume-overdue": (
        "chrono_forge.maintenance.resume_overdue",
        "I",
        5,
        "cancel runs past their deadline; re-send deliveries the broker lost (first passes, "
        "continuations, merge polls, retries)",
    ),
    "cleanup": ("chrono_forge.maintenance.cleanup", "D", None, "delete old terminal workflows"),
}
SCHEDULE_PREFIX = "chrono_forge:maintenance:"


def _minutes(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(minutes=value)


def _days(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(days=value)


def reap(stale_after_minutes: float | None = None) -> int:
    """:func:`chrono_forge.operations.reap_all`; default threshold ``REAP_STALE_AFTER``."""
    return operations.reap_all(_minutes(stale_after_minutes))


def resume_overdue(grace_minutes: float | None = None) -> int:
    """:func:`chrono_forge.operations.cancel_past_deadline`, then
    :func:`chrono_forge.operations.resume_overdue_all` (default grace ``RESUME_OVERDUE_GRACE``):
    a run past its deadline is cancelled, not re-delivered, so the schedule bounds how long a run
    parked on an event or a merge outlives its deadline."""
    operations.cancel_past_deadline()
    return operations.resume_overdue_all(_minutes(grace_minutes))


def cleanup(
    older_than_days: float = 90,
    completed_older_than_days: float | None = None,
    failed_older_than_days: float | None = None,
    prune_repetitions_older_than_days: float | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Any = None,
) -> dict[str, int]:
    """:func:`chrono_forge.cleanup.run` with windows in days (for Schedules and the command)."""
    counts = _cleanup.run(
        older_than=timedelta(days=older_than_days),
        completed_older_than=_days(completed_older_than_days),
        failed_older_than=_days(failed_older_than_days),
        prune_repetitions_older_than=_days(prune_repetitions_older_than_days),
        batch_size=batch_size,
        dry_run=dry_run,
        progress=progress,
    )
    logger.info("chrono_forge: cleanup %s %s", "would delete" if dry_run else "deleted", counts)
    return counts


def enqueue(name: str, **kwargs: Any) -> None:
    """Run one maintenance function (``"reap"``, ``"resume-overdue"``, ``"cleanup"``) in a worker,
    on the ``MAINTENANCE_CLUSTER`` configured now."""
    func = SCHEDULES[name][0]
    dispatch.enqueue_call(func, cluster=conf.get("MAINTENANCE_CLUSTER"), **kwargs)


def install_schedules() -> list[tuple[str, bool]]:
    """Create the django-q2 Schedules, or bring existing ones up to date (idempotent); returns
    ``[(name, created)]``. An existing schedule keeps the timing and arguments an operator gave it;
    only its function and cluster are reset."""
    cluster = conf.get("MAINTENANCE_CLUSTER")
    done = []
    for name, (func, schedule_type, minutes, _) in SCHEDULES.items():
        schedule, created = Schedule.objects.update_or_create(
            name=SCHEDULE_PREFIX + name,
            defaults={"func": func, "cluster": cluster},
            create_defaults={
                "func": func,
                "cluster": cluster,
                "schedule_type": schedule_type,
                "minutes": minutes,
                "repeats": -1,
                "next_run": clock.now(),
            },
        )
        done.append((schedule.name, created))
    return done


def uninstall_schedules() -> int:
    """Delete the Schedules :func:`install_schedules` created; returns how many there were."""
    deleted, _ = Schedule.objects.filter(name__in=[SCHEDULE_PREFIX + n for n in SCHEDULES]).delete()
    return deleted
