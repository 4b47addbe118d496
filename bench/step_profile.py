"""Client CPU per step of an inline 100-step pass, and where it goes (cProfile).

Not a test: it runs ``Steps.perform_now(key, n=STEPS)`` (tests/workflows_core.py, as
bench/steps_per_second.py and bench/dbos_compare.py run it) ``--passes`` times, prints the process
CPU time per step without the profiler, then profiles as many passes more with CPU time as the
profiler's clock (so a synced commit's wait does not count) and prints the top entries by own time
and by cumulative time.

Run (from the repository root; the database is chosen like the tests' settings):

    BENCH_SQLITE_SYNCHRONOUS=FULL CHRONO_FORGE_TEST_DB=sqlite .venv/bin/python bench/step_profile.py
    eval "$(scripts/pg start /tmp/cf-bench-pg)"
    CHRONO_FORGE_TEST_DB=postgres .venv/bin/python bench/step_profile.py
    scripts/pg stop /tmp/cf-bench-pg

A throwaway database is created (Django's test-database machinery) and destroyed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CHRONO_FORGE_TEST_DB", "sqlite")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from chrono_forge import dispatch  # noqa: E402
from chrono_forge.dispatch.memory import InMemoryDispatcher  # noqa: E402
from tests.workflows_core import Steps  # noqa: E402

STEPS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=10, help="passes timed, then profiled")
    parser.add_argument("--top", type=int, default=25, help="profile entries printed per order")
    parser.add_argument("--save", help="also write the profile to this file (pstats)")
    args = parser.parse_args()
    dispatch.set_dispatcher(InMemoryDispatcher())  # no broker: measure the engine's own writes
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        for index in range(3):  # warm up: imports, caches, the connection
            Steps.perform_now(f"warm-{index}", n=STEPS)
        started = time.process_time()
        for index in range(args.passes):
            Steps.perform_now(f"timed-{index}", n=STEPS)
        cpu = (time.process_time() - started) / (args.passes * STEPS)
        print(f"{connection.vendor}: client CPU per step {cpu * 1e3:.3f} ms (no profiler)")
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        for index in range(args.passes):
            Steps.perform_now(f"profiled-{index}", n=STEPS)
        profile.disable()
        if args.save:
            profile.dump_stats(args.save)
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
