"""The benches' database helpers: a throwaway PostgreSQL cluster measured with production's
durability, and a line saying how durable the connected database is.

scripts/pg switches fsync, synchronous_commit and full_page_writes off, because a test cluster holds
nothing worth keeping, and autovacuum, so that the plan tests do not depend on when it ran; a
measurement (or a crash test) needs them back on, like production.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes")
PRODUCTION_SETTINGS = (*DURABILITY_SETTINGS, "autovacuum")


def start_durable(
    stack: list[Callable[[], object]], *, prefix: str = "chrono_forge-bench-pg."
) -> str:
    """Start a scripts/pg cluster of our own in a new /tmp directory (the server runs as the
    postgres user, which must reach it), export its ``CHRONO_FORGE_PG_*`` variables, switch
    durability and autovacuum on and push the cluster's stop onto ``stack``. Returns the
    cluster's DSN."""
    for name in [name for name in os.environ if name.startswith("CHRONO_FORGE_PG_")]:
        del os.environ[name]  # never alter a cluster someone else started
    directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    started = subprocess.run(
        [str(ROOT / "scripts/pg"), "start", directory], capture_output=True, text=True
    )
    if started.returncode:
        raise SystemExit(f"scripts/pg could not start PostgreSQL:\n{started.stderr}")
    stack.append(lambda: subprocess.run([str(ROOT / "scripts/pg"), "stop", directory], check=False))
    for line in started.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        os.environ[name] = value.strip("'\"")
    import psycopg

    dsn = os.environ["CHRONO_FORGE_PG_DSN"]
    with psycopg.connect(dsn, autocommit=True) as connection:
        for name in PRODUCTION_SETTINGS:
            connection.execute(f"ALTER SYSTEM SET {name} = on")
        connection.execute("SELECT pg_reload_conf()")
    return dsn


def durability() -> str:
    """How durable Django's default connection is: PostgreSQL's three settings, or SQLite's
    journal mode and synchronous level."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            values = []
            for name in DURABILITY_SETTINGS:
                cursor.execute(f"SHOW {name}")
                values.append(f"{name}={cursor.fetchone()[0]}")
            return "PostgreSQL, " + ", ".join(values)
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[cursor.fetchone()[0]]
        return f"SQLite, journal_mode={journal}, synchronous={synchronous}"
