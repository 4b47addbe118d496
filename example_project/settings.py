"""Settings of the example project: SQLite + django-q2 + chrono_forge, as the README recommends.

Start it with ``scripts/demo``. Not for production (DEBUG, a published SECRET_KEY).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "django-insecure-chrono-forge-example-project"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "chrono_forge",
    "example_project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

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

# SQLite shared by the web process and the qcluster workers: WAL so readers never block the
# writer, IMMEDIATE so read-then-write transactions queue instead of failing with "database is
# locked", and a 20 s busy timeout. Do not add PRAGMA busy_timeout to init_command: it would
# override "timeout". CHRONO_FORGE_DEMO_DB points at another file (scripts/demo --check uses one).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHRONO_FORGE_DEMO_DB") or BASE_DIR / "db.sqlite3",
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
        "CONN_MAX_AGE": 60,
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

Q_CLUSTER = {
    "name": "example",
    "orm": "default",  # the ORM broker: enqueueing is part of your transaction
    "workers": 2,
    "timeout": 300,
    "retry": 600,  # must exceed timeout plus the wait in the local queue
    "max_attempts": 3,  # a safety net; chrono_forge retries steps durably itself
    "queue_limit": 2,
    "save_limit": 250,
    "ack_failures": True,
    "cache": "django_q",  # cluster stats, read by `chrono_forge status` and the admin Overview
}

# django-q2's cluster stats must live in a cache the web process and the qcluster share (the
# default LocMemCache is private to each process): a file cache is enough on one machine.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "django_q": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(BASE_DIR / ".django_q_cache"),
    },
}

CHRONO_FORGE = {}

# chrono_forge logs each step failure at WARNING and notable events at INFO. django-q2 logs every
# enqueue at INFO, so it stays at WARNING except in the qcluster log (scripts/demo sets INFO there).
# The root handler only takes WARNING and up: Django's own INFO records already reach the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "console_warnings": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "level": "WARNING",
        },
    },
    "root": {"handlers": ["console_warnings"], "level": "WARNING"},
    "loggers": {
        "chrono_forge": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django-q": {
            "handlers": ["console"],
            "level": os.environ.get("DJANGO_Q_LOG_LEVEL", "WARNING"),
            "propagate": False,
        },
    },
}
