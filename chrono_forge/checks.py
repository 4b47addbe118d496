"""System checks: ``manage.py check`` reports chrono_forge misconfiguration with ``chrono_forge.*`` ids."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from . import conf


def _error(msg: str, id: str, hint: str | None = None) -> checks.CheckMessage:
    return checks.Error(msg, hint=hint, id=f"chrono_forge.{id}")


@checks.register()
def check_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    raw = getattr(settings, "CHRONO_FORGE", {})
    if not isinstance(raw, dict):
        return [_error("CHRONO_FORGE must be a dict.", "E001")]
    problems: list[checks.CheckMessage] = []
    unknown = sorted(set(raw) - set(conf.DEFAULTS))
    if unknown:
        problems.append(
            _error(
                f"Unknown CHRONO_FORGE setting(s): {', '.join(unknown)}.",
                "E002",
                hint=f"Known settings: {', '.join(sorted(conf.DEFAULTS))}.",
            )
        )
    for name in conf.DURATION_SETTINGS:
        value = raw.get(name)
        if value is None:
            continue
        valid = isinstance(value, timedelta) or (
            isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        if not valid or conf.as_timedelta(value) <= timedelta(0):
            problems.append(
                _error(
                    f"CHRONO_FORGE[{name!r}] must be a positive timedelta or number of "
                    f"seconds, got {value!r}.",
                    "E003",
                )
            )
    for name in conf.BYTES_SETTINGS:
        value = raw.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value <= 0
        ):
            problems.append(
                _error(
                    f"CHRONO_FORGE[{name!r}] must be a positive number of bytes, got {value!r}.",
                    "E004",
                )
            )
    dispatcher = raw.get("DISPATCHER")
    if dispatcher is not None:
        try:
            import_string(dispatcher)
        except ImportError as exc:
            problems.append(
                _error(
                    f"CHRONO_FORGE['DISPATCHER'] {dispatcher!r} cannot be imported: {exc}", "E005"
                )
            )
    alias = raw.get("DATABASE")
    if alias is not None and alias not in settings.DATABASES:
        problems.append(
            _error(f"CHRONO_FORGE['DATABASE'] {alias!r} is not a key of DATABASES.", "E006")
        )
    for name in ("CLUSTER", "BRANCH_MERGE_CLUSTER", "MAINTENANCE_CLUSTER"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(
                _error(f"CHRONO_FORGE[{name!r}] must be a django-q2 cluster name (str).", "E007")
            )
    return problems


@checks.register()  # reads settings only: runs without database access, like the others
def check_sqlite_transaction_mode(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    alias = conf.database()
    database = settings.DATABASES.get(alias, {})
    if "sqlite3" not in database.get("ENGINE", ""):
        return []
    mode = (database.get("OPTIONS") or {}).get("transaction_mode")
    if str(mode).upper() == "IMMEDIATE":
        return []
    return [
        checks.Warning(
            f"DATABASES[{alias!r}] is SQLite without OPTIONS['transaction_mode'] = 'IMMEDIATE'.",
            hint="SQLite ignores select_for_update(); chrono_forge's lock needs BEGIN IMMEDIATE, and "
            "read-then-write transactions otherwise fail with 'database is locked'. Use OPTIONS "
            "{'transaction_mode': 'IMMEDIATE', 'timeout': 20, 'init_command': 'PRAGMA journal_mode=WAL'}.",
            id="chrono_forge.W001",
        )
    ]


@checks.register()
def check_django_q(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    q_cluster = getattr(settings, "Q_CLUSTER", None) or {}
    problems: list[checks.CheckMessage] = []
    timeout, retry = q_cluster.get("timeout"), q_cluster.get("retry", 60)
    if timeout is not None and retry is not None and retry <= timeout:
        problems.append(
            checks.Warning(
                f"Q_CLUSTER['retry'] ({retry}) must be greater than Q_CLUSTER['timeout'] ({timeout}).",
                hint="Otherwise django-q2 redelivers a task that is still running (duplicate passes).",
                id="chrono_forge.W002",
            )
        )
    orm = q_cluster.get("orm")
    if orm and orm != conf.database():
        problems.append(
            checks.Warning(
                f"The django-q2 ORM broker uses database {orm!r} but chrono_forge uses {conf.database()!r}.",
                hint="Enqueues are then no longer part of your transactions; chrono_forge defers them to "
                "transaction.on_commit (a crash between commit and enqueue loses the continuation; "
                "run `manage.py chrono_forge resume-overdue` periodically).",
                id="chrono_forge.W003",
            )
        )
    return problems


@checks.register()
def check_reap_threshold(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    try:
        reap_after, max_duration = conf.reap_stale_after(), conf.max_duration()
    except TypeError:
        return []  # E003 reports the bad value
    if reap_after >= max_duration or min(reap_after, max_duration) <= timedelta(0):
        return []  # fine, or a non-positive value that E003 reports
    return [
        checks.Warning(
            f"CHRONO_FORGE['REAP_STALE_AFTER'] ({reap_after}) is shorter than MAX_DURATION "
            f"({max_duration}).",
            hint="A reaped pass finds the lock still fresh and exits, so reaping does nothing "
            "until the lock is older than MAX_DURATION. Leave REAP_STALE_AFTER unset "
            "(3 x MAX_DURATION).",
            id="chrono_forge.W004",
        )
    ]


@checks.register()
def check_child_rekick_after(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    raw = getattr(settings, "CHRONO_FORGE", {})
    value = raw.get("CHILD_REKICK_AFTER") if isinstance(raw, dict) else None
    if value is None:
        return []
    valid = isinstance(value, timedelta) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    if valid and conf.as_timedelta(value) > timedelta(0):
        return []
    return [
        _error(
            f"CHRONO_FORGE['CHILD_REKICK_AFTER'] must be a positive timedelta or number of "
            f"seconds, got {value!r}.",
            "E030",
            hint="How long a branch child may sit never started before the merge poller sends "
            "its first delivery again (default 5 minutes).",
        )
    ]
