"""Django settings for chrono_forge's own test suite.

The database comes from the environment:

* default: SQLite. The test database is a *file* (not pytest-django's in-memory default) so
  that a `qcluster` subprocess started by an end-to-end test can open it. Options follow the
  recipe in the README: WAL, `transaction_mode="IMMEDIATE"`, `timeout=20`.
* ``CHRONO_FORGE_TEST_DB=postgres``: PostgreSQL, reached through ``CHRONO_FORGE_PG_HOST``,
  ``_PORT``, ``_USER``, ``_PASSWORD`` and ``_NAME`` (``scripts/pg start`` prints them).
* ``CHRONO_FORGE_TEST_DB_NAME``: point NAME (and TEST NAME) at a test database another process
  already created. This is how the `qcluster` subprocess joins the test process's database.
"""

import os
import tempfile
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "chrono-forge-tests-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "django_tasks_db",  # the Django Tasks dispatcher's tests (db_worker)
    "chrono_forge",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

STATIC_URL = "/static/"

# --- database ------------------------------------------------------------------------------

TEST_DB = os.environ.get("CHRONO_FORGE_TEST_DB", "sqlite")
JOIN_DB_NAME = os.environ.get("CHRONO_FORGE_TEST_DB_NAME")

_default: dict[str, Any]
if TEST_DB == "postgres":
    _default = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("CHRONO_FORGE_PG_NAME", "chrono_forge"),
        "HOST": os.environ.get("CHRONO_FORGE_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("CHRONO_FORGE_PG_PORT", "5432"),
        "USER": os.environ.get("CHRONO_FORGE_PG_USER", "chrono_forge"),
        "PASSWORD": os.environ.get("CHRONO_FORGE_PG_PASSWORD", ""),
        "CONN_MAX_AGE": 0,
        "TEST": {},
    }
elif TEST_DB == "sqlite":
    # One file per test process, so parallel runs never share a database.
    _tmp = Path(os.environ.get("CHRONO_FORGE_TEST_TMPDIR") or tempfile.gettempdir())
    _default = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(_tmp / f"chrono_forge-{os.getpid()}.sqlite3"),
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
        "TEST": {"NAME": str(_tmp / f"test_chrono_forge-{os.getpid()}.sqlite3")},
    }
else:
    raise RuntimeError(f"CHRONO_FORGE_TEST_DB must be 'sqlite' or 'postgres', not {TEST_DB!r}")

if JOIN_DB_NAME:
    _default["NAME"] = JOIN_DB_NAME
    _default["TEST"] = {"NAME": JOIN_DB_NAME}

# A second alias, for the multi-database tests (they point CHRONO_FORGE["DATABASE"] at it).
_secondary = {**_default, "TEST": {**_default["TEST"]}}
if TEST_DB == "postgres":
    _secondary["NAME"] = _default["NAME"] + "_secondary"
    _secondary["TEST"] = {"NAME": "test_" + _secondary["NAME"]}
else:
    _secondary["NAME"] = _default["NAME"].replace(".sqlite3", "-secondary.sqlite3")
    _secondary["TEST"] = {
        "NAME": _default["TEST"]["NAME"].replace(".sqlite3", "-secondary.sqlite3")
    }

DATABASES = {"default": _default, "secondary": _secondary}

# --- django-q2 -----------------------------------------------------------------------------

Q_CLUSTER = {
    "name": "chrono_forge_tests",
    "orm": "default",
    "workers": 2,
    "timeout": 30,
    "retry": 60,
    "max_attempts": 1,
    "ack_failures": True,
    "poll": 0.1,
    "save_limit": 0,
    "catch_up": False,
    "label": "Django Q2",
    "cache": "django_q",  # cluster stats, shared with the qcluster subprocesses (CACHES below)
}

# django-q2 keeps its cluster stats (what `chrono_forge status` reads) in Q_CLUSTER["cache"]: a
# file cache that a test process and the qclusters it starts share (the qcluster fixture passes
# the directory down), one per test process.
QSTATS_DIR = os.environ.get("CHRONO_FORGE_TEST_QSTATS_DIR") or str(
    Path(os.environ.get("CHRONO_FORGE_TEST_TMPDIR") or tempfile.gettempdir())
    / f"chrono_forge-qstats-{os.getpid()}"
)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "django_q": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": QSTATS_DIR,
    },
}

# --- Django Tasks (only the Django Tasks dispatcher's tests select it) ------------------------

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# The test suite's workflow modules are not `workflows` modules of an installed app: listed here,
# they register in every process that runs them, the qcluster subprocesses of the e2e tests too.
CHRONO_FORGE = {
    "WORKFLOW_MODULES": [
        "tests.workflows_admin",
        "tests.workflows_api",
        "tests.workflows_branches",
        "tests.workflows_core",
        "tests.workflows_deadline",
        "tests.workflows_crash",
        "tests.workflows_cancel",
        "tests.workflows_engines",
        "tests.workflows_liveness",
        "tests.workflows_messages",
        "tests.workflows_on_cancel",
        "tests.workflows_ops",
        "tests.workflows_poison",
        "tests.workflows_results",
        "tests.workflows_signals",
        "tests.workflows_timeout",
        "tests.workflows_versioning",
        "tests.workflows_waits",
        "example_project.demo.workflows",
    ],
}

# --- logging: quiet unless asked (the qcluster fixture asks for INFO in its log file) --------
# django-q2 only installs its own handler when none is configured; with this root handler its
# records (logger "django-q") simply propagate here, like chrono_forge's, so caplog sees both.

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": os.environ.get("CHRONO_FORGE_TEST_LOG_LEVEL", "WARNING"),
    },
}

# The admin tests log users in hundreds of times: PBKDF2's deliberate slowness (~1 s per admin
# test) buys nothing here. MD5 is never acceptable outside tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
