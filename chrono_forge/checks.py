"""System checks: ``manage.py check`` reports misconfiguration with ``chrono_forge.*`` ids.

Every check reads settings only (no database, no broker connection) and never raises: a value of the
wrong type is itself the finding, reported under the id of the setting's kind.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db import models
from django.utils.module_loading import import_string

from . import conf

DJANGO_Q_DISPATCHER = "chrono_forge.dispatch.django_q.DjangoQDispatcher"
DJANGO_TASKS_MODULE = "chrono_forge.dispatch.django_tasks"


def _error(msg: str, id: str, hint: str | None = None) -> checks.CheckMessage:
    return checks.Error(msg, hint=hint, id=f"chrono_forge.{id}")


def _warning(msg: str, id: str, hint: str | None = None) -> checks.CheckMessage:
    return checks.Warning(msg, hint=hint, id=f"chrono_forge.{id}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- one validator per setting: the problem (a sentence) or None ----------------------------------
def _duration_problem(value: Any) -> str | None:
    if value is None:
        return None
    try:
        delta = conf.as_duration(value)
    except TypeError:
        delta = None
    except ValueError as error:
        return str(error)
    if delta is None or delta <= timedelta(0):
        return f"must be a positive timedelta or number of seconds, got {value!r}"
    return None


def _bytes_problem(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return None
    return f"must be a positive number of bytes (int), got {value!r}"


def _chars_problem(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return None
    return f"must be a positive number of characters (int), got {value!r}"


def _cluster_problem(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return None
    return f"must be a django-q2 cluster name (a non-empty str) or None, got {value!r}"


def _dotted_path_problem(value: Any, what: str) -> str | None:
    if not isinstance(value, str) or "." not in value:
        return f"must be the dotted path of {what} (a str), got {value!r}"
    try:
        import_string(value)
    except Exception as error:  # ImportError, or whatever the module raises while importing
        return f"{value!r} cannot be imported: {error}"
    return None


def _dispatcher_problem(value: Any) -> str | None:
    return _dotted_path_problem(value, "a dispatcher class")


def _database_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return f"must be a database alias (a str), got {value!r}"
    if value not in settings.DATABASES:
        return f"{value!r} is not a key of DATABASES"
    return None


def _task_timeout_problem(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return None
    return f"must be a positive number of seconds (int) or None, got {value!r}"


def _primary_key_problem(value: Any) -> str | None:
    if value is None:
        return None
    problem = _dotted_path_problem(value, "a model field class")
    if problem:
        return problem
    field = import_string(value)
    if not (
        isinstance(field, type)
        and issubclass(field, (models.AutoField, models.BigAutoField, models.UUIDField))
    ):
        return f"{value!r} is not an AutoField, BigAutoField or UUIDField subclass"
    return None


def _tasks_backend_problem(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return None
    return f"must be an alias of the TASKS setting (a non-empty str), got {value!r}"


def _workflow_modules_problem(value: Any) -> str | None:
    """Module paths whose import registers their workflow classes (imported here, as at start)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        return f"must be a list of module paths (non-empty str), got {value!r}"
    broken = []
    for path in value:
        try:
            importlib.import_module(path)
        except Exception as error:
            broken.append(f"{path!r} cannot be imported ({type(error).__name__}: {error})")
    if broken:
        return (
            f"{'; '.join(broken)}: their workflow classes are not registered, so the workers "
            "stall their workflows"
        )
    return None


def _replay_divergence_problem(value: Any) -> str | None:
    if value in conf.REPLAY_DIVERGENCE_MODES:
        return None
    return f"must be one of {', '.join(map(repr, conf.REPLAY_DIVERGENCE_MODES))}, got {value!r}"


#: setting -> (check id, validator). Every key of conf.DEFAULTS has one (a test insists).
VALIDATORS: dict[str, tuple[str, Callable[[Any], str | None]]] = {
    **{name: ("E003", _duration_problem) for name in conf.DURATION_SETTINGS},
    **{name: ("E004", _bytes_problem) for name in conf.BYTES_SETTINGS},
    **{name: ("E004", _chars_problem) for name in conf.CHARS_SETTINGS},
    "DISPATCHER": ("E005", _dispatcher_problem),
    "DATABASE": ("E006", _database_problem),
    **{name: ("E007", _cluster_problem) for name in conf.CLUSTER_SETTINGS},
    "TASK_TIMEOUT": ("E010", _task_timeout_problem),
    "PRIMARY_KEY_FIELD": ("E011", _primary_key_problem),
    "TASKS_BACKEND": ("E040", _tasks_backend_problem),
    "WORKFLOW_MODULES": ("E020", _workflow_modules_problem),
    # how long a branch child may sit never started before its merge poller re-sends its delivery
    "CHILD_REKICK_AFTER": ("E030", _duration_problem),
    # what a replay that no longer matches the run's history does: warn or stall
    "REPLAY_DIVERGENCE": ("E050", _replay_divergence_problem),
}


@checks.register()
def check_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    raw = getattr(settings, "CHRONO_FORGE", {})
    if not isinstance(raw, dict):
        return [_error(f"CHRONO_FORGE must be a dict, got {type(raw).__name__}.", "E001")]
    problems: list[checks.CheckMessage] = []
    unknown = sorted(set(raw) - set(conf.DEFAULTS), key=repr)
    if unknown:
        problems.append(
            _error(
                f"Unknown CHRONO_FORGE setting(s): {', '.join(map(str, unknown))}.",
                "E002",
                hint=f"Known settings: {', '.join(sorted(conf.DEFAULTS))}.",
            )
        )
    for name, (id, validate) in VALIDATORS.items():
        if name in raw:
            problem = validate(raw[name])
            if problem:
                problems.append(_error(f"CHRONO_FORGE[{name!r}] {problem}.", id))
    return problems


def _database_settings() -> tuple[str, dict]:
    """chrono_forge's alias and its DATABASES entry ({} when either is unusable: E006 says so)."""
    alias = conf.get("DATABASE") or "default"
    if not isinstance(alias, str) or not isinstance(settings.DATABASES.get(alias), dict):
        return str(alias), {}
    return alias, settings.DATABASES[alias]


@checks.register()  # reads settings only: runs without database access, like the others
def check_sqlite_transaction_mode(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    alias, database = _database_settings()
    if "sqlite3" not in str(database.get("ENGINE", "")):
        return []
    options = database.get("OPTIONS")
    mode = options.get("transaction_mode") if isinstance(options, dict) else None
    if str(mode).upper() == "IMMEDIATE":
        return []
    return [
        checks.Warning(
            f"DATABASES[{alias!r}] is SQLite without OPTIONS['transaction_mode'] = 'IMMEDIATE'.",
            hint="SQLite ignores select_for_update(); chrono_forge's lock needs BEGIN IMMEDIATE, "
            "and read-then-write transactions otherwise fail with 'database is locked'. Use "
            "OPTIONS {'transaction_mode': 'IMMEDIATE', 'timeout': 20, "
            "'init_command': 'PRAGMA journal_mode=WAL'}.",
            id="chrono_forge.W001",
        )
    ]


@checks.register()
def check_postgresql_health_checks(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    alias, database = _database_settings()
    if "postgresql" not in str(database.get("ENGINE", "")):
        return []
    # CONN_MAX_AGE=0 opens a fresh connection per task; only persistent connections can go stale.
    if database.get("CONN_MAX_AGE", 0) == 0 or database.get("CONN_HEALTH_CHECKS"):
        return []
    return [
        _warning(
            f"DATABASES[{alias!r}] is PostgreSQL with persistent connections (CONN_MAX_AGE="
            f"{database.get('CONN_MAX_AGE')!r}) but without CONN_HEALTH_CHECKS.",
            "W011",
            hint="A connection dropped by the server (restart, failover, idle timeout) then fails "
            "the next task a worker runs. Set DATABASES[...]['CONN_HEALTH_CHECKS'] = True.",
        )
    ]


def _uses_django_tasks() -> bool:
    path = conf.get("DISPATCHER")
    if not isinstance(path, str):
        return False
    if path.startswith(DJANGO_TASKS_MODULE + "."):
        return True
    try:
        dispatcher = import_string(path)
    except Exception:
        return False  # E005 reports it
    module = sys.modules.get(DJANGO_TASKS_MODULE)
    return (
        module is not None
        and isinstance(dispatcher, type)
        and issubclass(dispatcher, module.DjangoTasksDispatcher)
    )


@checks.register()
def check_django_tasks(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The Django Tasks dispatcher needs django.tasks (or the backport) and a backend that can run
    a task later (``supports_defer``): every wait, backoff and poll is a deferred task."""
    alias = conf.get("TASKS_BACKEND")
    if not _uses_django_tasks() or _tasks_backend_problem(alias):
        return []  # another dispatcher, or a bad alias that E040 already reports
    try:  # optional: Django >= 6.0, or the django-tasks backport below
        from django.tasks import task_backends
    except ImportError:
        try:
            # The backport's handler is the same class as Django 6's, under another module.
            from django_tasks import task_backends  # type: ignore[assignment]
        except ImportError:
            return [
                _error(
                    "CHRONO_FORGE['DISPATCHER'] is the Django Tasks dispatcher, but neither "
                    "django.tasks (Django >= 6.0) nor the django-tasks backport is installed.",
                    "E040",
                    hint="pip install 'chrono_forge[tasks]' (django-tasks and django-tasks-db).",
                )
            ]
    try:
        backend = task_backends[alias]
    except Exception as error:
        return [
            _error(
                f"CHRONO_FORGE['TASKS_BACKEND'] {alias!r} is not a usable TASKS backend: {error}",
                "E040",
                hint="Name an alias of the TASKS setting.",
            )
        ]
    if not getattr(backend, "supports_defer", False):
        return [
            _error(
                f"The Django Tasks backend {alias!r} ({type(backend).__name__}) cannot defer tasks "
                "(supports_defer is False).",
                "E040",
                hint="chrono_forge schedules every wait, retry backoff and poll as a task with "
                "run_after. Use a backend that supports it, e.g. django-tasks-db's "
                "'django_tasks_db.DatabaseBackend'.",
            )
        ]
    return []


def _uses_django_q() -> bool:
    return conf.get("DISPATCHER") == DJANGO_Q_DISPATCHER


def _missing_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _broker_problem(q_cluster: dict) -> str | None:
    """Why django-q2's ``get_broker`` could not build the configured broker, decided from the
    settings (and which packages are importable) in the order ``get_broker`` tries them."""
    if q_cluster.get("broker_class"):
        problem = _dotted_path_problem(q_cluster["broker_class"], "a django-q2 broker class")
        return f"Q_CLUSTER['broker_class'] {problem}" if problem else None
    if q_cluster.get("iron_mq"):
        kind, package = "IronMQ", "iron_mq"
    elif isinstance(q_cluster.get("sqs"), dict):
        kind, package = "SQS", "boto3"
    elif q_cluster.get("orm"):
        alias = q_cluster["orm"]
        if not isinstance(alias, str) or alias not in settings.DATABASES:
            return f"Q_CLUSTER['orm'] {alias!r} is not a key of DATABASES"
        return None
    elif q_cluster.get("mongo"):
        kind, package = "MongoDB", "pymongo"
    elif q_cluster.get("django_redis"):
        kind, package = "django-redis", "django_redis"
    else:
        kind, package = "Redis (django-q2's default: no 'orm' or other broker is set)", "redis"
    if _missing_module(package):
        return f"the {kind} broker needs the {package!r} package, which is not installed"
    return None


@checks.register()
def check_django_q(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    problems: list[checks.CheckMessage] = []
    if not _uses_django_q():
        return problems
    if not apps.is_installed("django_q"):
        problems.append(
            _error(
                "'django_q' is not in INSTALLED_APPS, but chrono_forge's dispatcher sends passes "
                "through django-q2.",
                "E012",
                hint="Add 'django_q' to INSTALLED_APPS (and run migrate), or set "
                "CHRONO_FORGE['DISPATCHER'] to another dispatcher.",
            )
        )
    q_cluster = getattr(settings, "Q_CLUSTER", None)
    if q_cluster is None:
        q_cluster = {}
    if not isinstance(q_cluster, dict):
        return problems + [
            _error(f"Q_CLUSTER must be a dict, got {type(q_cluster).__name__}.", "E013")
        ]
    broker = _broker_problem(q_cluster)
    if broker:
        problems.append(
            _error(
                f"django-q2 cannot build its broker: {broker}.",
                "E013",
                hint="Every enqueue would fail. Install the package or set Q_CLUSTER['orm'] = "
                "'default' for the ORM broker.",
            )
        )
    timeout, retry = q_cluster.get("timeout"), q_cluster.get("retry", 60)
    for name, value in (("timeout", timeout), ("retry", retry)):
        if value is not None and not (_is_number(value) and value > 0):
            problems.append(
                _error(
                    f"Q_CLUSTER[{name!r}] must be a positive number of seconds, got {value!r}.",
                    "E013",
                )
            )
            return problems
    if timeout is not None and retry is not None and retry <= timeout:
        problems.append(
            checks.Warning(
                f"Q_CLUSTER['retry'] ({retry}) must be greater than Q_CLUSTER['timeout'] "
                f"({timeout}).",
                hint="Otherwise django-q2 redelivers a task that is still running "
                "(duplicate passes).",
                id="chrono_forge.W002",
            )
        )
    max_duration = _valid_duration("MAX_DURATION")
    task_timeout = conf.get("TASK_TIMEOUT")
    pass_timeout = task_timeout if _task_timeout_problem(task_timeout) is None else None
    pass_timeout = pass_timeout or timeout
    if (
        pass_timeout is not None
        and max_duration is not None
        and pass_timeout > max_duration.total_seconds()
    ):
        source = "CHRONO_FORGE['TASK_TIMEOUT']" if task_timeout else "Q_CLUSTER['timeout']"
        problems.append(
            _warning(
                f"{source} ({pass_timeout} s) is longer than CHRONO_FORGE['MAX_DURATION'] "
                f"({max_duration}).",
                "W010",
                hint="A pass may then run past MAX_DURATION, when another pass may steal its lock "
                "and run the same steps. Make MAX_DURATION at least the task timeout.",
            )
        )
    orm = q_cluster.get("orm")
    if orm and orm != conf.database():
        problems.append(
            checks.Warning(
                f"The django-q2 ORM broker uses database {orm!r} but chrono_forge uses "
                f"{conf.database()!r}.",
                hint="Enqueues are then no longer part of your transactions; chrono_forge defers "
                "them to transaction.on_commit (a crash between commit and enqueue loses the "
                "continuation; run `manage.py chrono_forge resume-overdue` periodically).",
                id="chrono_forge.W003",
            )
        )
    return problems


def _valid_duration(name: str) -> timedelta | None:
    """A duration setting's value, or None when unset to nothing or invalid (E003 reports it)."""
    value = conf.get(name)
    if _duration_problem(value) is not None or value is None:
        return None
    return conf.as_duration(value)


@checks.register()
def check_reap_threshold(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    max_duration = _valid_duration("MAX_DURATION")
    if max_duration is None:
        return []
    explicit = conf.get("REAP_STALE_AFTER")
    reap_after = 3 * max_duration if explicit is None else _valid_duration("REAP_STALE_AFTER")
    if reap_after is None or reap_after >= max_duration:
        return []
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
