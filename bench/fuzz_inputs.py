"""Throw a catalogue of bad (and borderline good) inputs through chrono_forge's public API and count
what happens.

Not a test: it prints counts per category and exits non-zero when anything is not a clear outcome.

* **clear**: refused with ``TypeError``/``ValueError``/``ChronoForgeError``/``CommandError`` at the
  call (commands: no traceback in their output), or a workflow that ends blocked (stalled/failed)
  with every ErrorLog naming such an error;
* **accepted**: no error, and everything stored reads back unchanged (types and the sign of zero
  included);
* **unclear**: any other exception, a traceback printed by a command, or an ErrorLog naming another
  exception (an ``OverflowError`` retried as if transient, say);
* **altered**: accepted, but the value read back from the database differs from the one given;
* **stuck**: a workflow left idle or running with nothing scheduled and not parked on an event.

Inputs: keys, kwargs, options, context keys and values, step results, step names, durations,
retry policies (built, per call and per class), task payloads (``chrono_forge.tasks.run_workflow``)
and command arguments (``call_command("chrono_forge", ...)``). The database is chosen like the
tests' settings; a fresh test database is created and dropped.

    .venv/bin/python bench/fuzz_inputs.py                       # SQLite
    eval "$(scripts/pg start /tmp/cf-fuzz-pg)"
    CHRONO_FORGE_TEST_DB=postgres .venv/bin/python bench/fuzz_inputs.py
    scripts/pg stop /tmp/cf-fuzz-pg

``-v`` lists every case that is not clear or accepted.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import reprlib
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.core.management import CommandError, call_command  # noqa: E402
from django.db import connection  # noqa: E402

from chrono_forge import DurableWorkflow, RetryPolicy, clock  # noqa: E402
from chrono_forge.exceptions import ChronoForgeError  # noqa: E402
from chrono_forge.models import ErrorLog, ExecutionLog, Workflow  # noqa: E402
from chrono_forge.tasks import run_workflow  # noqa: E402
from chrono_forge.testing import workflow_env  # noqa: E402
from tests import workflows_api as a  # noqa: E402

CLEAR = (TypeError, ValueError, ChronoForgeError, CommandError)
CLEAR_NAMES = ("TypeError", "ValueError")


def same(x: Any, y: Any) -> bool:
    """Equality that also sees types and the sign of zero."""
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        return x == y and math.copysign(1, x) == math.copysign(1, y)
    if isinstance(x, list):
        return len(x) == len(y) and all(same(i, j) for i, j in zip(x, y, strict=True))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    return x == y


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40


def show(value: Any, width: int) -> str:
    """A short repr for a label, bounded in depth and breadth (the plain repr of a value that
    shares references at every level is exponential)."""
    return _REPR.repr(value)[:width]


def deep(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def shared(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value, value]
    return value


def loop() -> list:
    value: list = []
    value.append(value)
    return value


# -- the catalogue ---------------------------------------------------------------------------------
KEYS = [
    123,
    None,
    b"k",
    ["k"],
    "",
    "a$b",
    "k" * 256,
    "a\x00b",
    "lone \ud800",
    "\udfff",
    1.5,
    True,
    ("k",),
    "k" * 255,
    "é" * 255,
    "😀",
    " ",
    "k\n",
]
VALUES = [
    (1, 2),
    {1: "a", "1": "b"},
    {1: "a"},
    {None: 1},
    {True: 1},
    {2.5: 1},
    {("t",): 1},
    "lone \ud800",
    {"k\udfff": 1},
    "nul \x00",
    {"k\x00": 1},
    [["deep \x00"]],
    math.nan,
    math.inf,
    -math.inf,
    1e16,
    1e308,
    -1.5e300,
    -0.0,
    10**4000,
    10**400,
    2**64,
    -(2**63) - 1,
    deep(65),
    deep(64),
    deep(5000),
    shared(60),
    loop(),
    {1, 2},
    frozenset(),
    b"bytes",
    bytearray(b"x"),
    object(),
    Exception("x"),
    clock.now(),
    timedelta(1),
    "x" * (70 * 1024),
    {"k": "x" * (70 * 1024)},
    0.1,
    1e15,
    5e-324,
    "é€😀",
    "\\u0000",
    "",
    [],
    {},
    None,
    True,
]
CONTEXT_KEYS = ["", 1, None, ("a",), "nul\x00", "lone \ud800", "k" * 256, "k" * 255, "$", "é"]
NAMES = ["", None, 1, "a$b", "a,b", "x" * 300, "nul\x00", "lone \ud800", "ok", "é", b"n", ["n"]]
DURATIONS = [
    math.nan,
    math.inf,
    -math.inf,
    1e12,
    1e300,
    10**20,
    -(10**20),
    timedelta.max,
    timedelta.min,
    timedelta(days=-(10**8)),
    "5",
    None,
    True,
    -1,
    0,
    0.5,
    60,
    timedelta(days=36500),
]
POLICY_ARGS = [
    {"max_attempts": 0},
    {"max_attempts": -1},
    {"max_attempts": 1.5},
    {"max_attempts": True},
    {"max_attempts": "3"},
    {"max_attempts": 10**30},
    {"base": math.nan},
    {"base": math.inf},
    {"base": -1},
    {"base": 1e300},
    {"base": 10**400},
    {"base": "1"},
    {"base": None},
    {"cap": timedelta.max},
    {"cap": -math.inf},
    {"jitter": 1},
    {"jitter": None},
    {"retry_on": ValueError},
    {"retry_on": "ValueError"},
    {"retry_on": {ValueError}},
    {"retry_on": [ValueError()]},
    {"retry_on": [int]},
    {"retry_on": (x for x in [ValueError])},
    {"bogus": 1},
    {},
    {"max_attempts": None, "base": 0, "cap": 0, "jitter": False},
]
NOT_POLICIES = ["3", 3, RetryPolicy, [RetryPolicy(), "x"], [], {"max_attempts": 2}, (1,), object()]
TASK_PAYLOADS = [
    ((".", "k"), {}),
    (("..", "k"), {}),
    (("a." * 2000 + "b", "k"), {}),
    ((123, "k"), {}),
    ((None, "k"), {}),
    ((["tests.workflows_api.Loose"], "k"), {}),
    (("os.system", "k"), {}),
    (("tests.workflows_api.Nasty", "k"), {}),
    (("tests.workflows_api.DoesNotExist", "k"), {}),
    (("no_such_module_xyz.Class", "k"), {}),
    (("tests.workflows_api.Loose", 123), {}),
    (("tests.workflows_api.Loose", "task-target"), {"attempt": "x"}),
    (("tests.workflows_api.Loose", "task-target"), {"retry_workflow": True}),
    (("tests.workflows_api.Loose", "task-target"), {"token": "not a date"}),
    (("tests.workflows_api.Loose", "k"), {"attempt": "x"}),
    (("tests.workflows_api.Loose", "k"), {"attempt": -1}),
    (("tests.workflows_api.Loose", "k"), {"attempt": 10**30}),
    (("tests.workflows_api.Loose", "k"), {"retry_counts": "x"}),
    (("tests.workflows_api.Loose", "k"), {"retry_counts": {"*": "x"}}),
    (("tests.workflows_api.Loose", "k"), {"retry_counts": [1]}),
    (("tests.workflows_api.Loose", "k"), {"token": "not a date"}),
    (("tests.workflows_api.Loose", "k"), {"token": 5}),
    (("tests.workflows_api.Loose", "k"), {"retry_workflow": "yes"}),
    (("tests.workflows_api.Loose", "k"), {"bogus": 1}),
    (("tests.workflows_api.Loose", "missing-key"), {}),
]
COMMANDS = [
    ["reap", "--stale-after", "nan"],
    ["reap", "--stale-after", "inf"],
    ["reap", "--stale-after", "1e308"],
    ["reap", "--stale-after", "-5"],
    ["resume-overdue", "--grace", "nan"],
    ["resume-overdue", "--grace", "1e20"],
    ["cleanup", "--older-than", "nan"],
    ["cleanup", "--older-than", "1e10"],
    ["cleanup", "--older-than", "-1", "--dry-run"],
    ["cleanup", "--batch-size", "0", "--dry-run"],
    ["list", "--limit", str(10**20)],
    ["list", "--limit", "-1"],
    ["list", "--class", "a\x00b"],
    ["list", "--state", "bogus"],
    ["show", "k\x00"],
    ["show", "k" * 300],
    ["show", "missing-key"],
    ["retry", "missing-key"],
    ["resume", "\ud800"],
    ["graph", "no.such.Class"],
    ["graph", "."],
    ["bogus-subcommand"],
    [],
]


class Fuzz:
    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.counts: Counter[str] = Counter()
        self.by_category: dict[str, Counter[str]] = {}
        self.failures: list[str] = []
        self.index = 0

    def record(self, category: str, outcome: str, label: str, detail: str = "") -> None:
        if category not in self.by_category:
            print(f"fuzz: {category} ...", file=sys.stderr, flush=True)
        self.counts[outcome] += 1
        self.by_category.setdefault(category, Counter())[outcome] += 1
        if outcome not in ("clear", "accepted"):
            self.failures.append(f"[{category}] {outcome}: {label} {detail}".rstrip())

    def fresh_key(self) -> str:
        self.index += 1
        return f"fuzz-{self.index}"

    # -- one case ------------------------------------------------------------------------------
    def case(self, category: str, label: str, call: Callable[[], Any], check=None) -> None:
        """Run ``call``; a clear error is clear, anything else unclear; without an error,
        ``check(result)`` returns "accepted", "clear", "unclear", "altered" or "stuck"."""
        try:
            result = call()
        except CLEAR:
            self.record(category, "clear", label)
            return
        except BaseException as error:  # noqa: BLE001 - counting is the point
            self.record(
                category, "unclear", label, f"-> {type(error).__name__}: {show(str(error), 120)}"
            )
            return
        outcome = check(result) if check else "accepted"
        detail = ""
        if isinstance(outcome, tuple):
            outcome, detail = outcome
        self.record(category, outcome, label, detail)

    def workflow_outcome(self, env, key: str, stored: Callable[[Workflow], bool] | None = None):
        """Run what is queued, then judge the workflow ``key``."""
        try:
            env.run_all()
        except CLEAR:
            pass
        except BaseException as error:  # noqa: BLE001
            return "unclear", f"-> {type(error).__name__} while running: {show(str(error), 120)}"
        wf = Workflow.objects.filter(key=key).first()
        if wf is None:
            return "accepted"
        errors = list(ErrorLog.objects.filter(workflow=wf).values_list("error_class", flat=True))
        unclear = [name for name in errors if not is_clear_class(name)]
        if unclear:
            return "unclear", f"-> recorded {sorted(set(unclear))} x{len(errors)}"
        if is_stuck(wf):
            return "stuck", f"-> {wf.state}, nothing scheduled"
        if wf.state in ("stalled", "failed"):
            return "clear"  # blocked, naming a clear error: nothing of the bad input was stored
        if stored is not None and not stored(wf):
            return "altered", ""
        return "accepted"


def is_clear_class(name: str) -> bool:
    import importlib

    if name in CLEAR_NAMES:
        return True
    module, _, qualname = name.rpartition(".")
    try:
        cls: Any = importlib.import_module(module or "builtins")
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, CLEAR)


def is_stuck(wf: Workflow) -> bool:
    if wf.state == "running":
        return True
    if wf.state != "idle" or wf.next_run_at is not None:
        return False
    pending = ExecutionLog.objects.filter(workflow=wf, state="pending")
    parked = pending.filter(step_name__startswith="continue_if$").exists() or (
        pending.filter(step_name__startswith="merge$").exists()
    )
    return not parked


def run_catalogue(fuzz: Fuzz) -> None:
    with workflow_env() as env:

        def clean():
            env.drop_pending()
            a.FLAGS.clear()

        # keys
        for key in KEYS:
            for how in ("perform_later", "perform_now", "retry_now", "retry_later"):
                clean()

                def call(key=key, how=how):
                    return getattr(a.Loose, how)(key)

                def check(row, key=key):
                    stored = Workflow.objects.get(pk=row.pk).key
                    return "accepted" if same(stored, key) else ("altered", repr(stored)[:60])

                fuzz.case("keys", f"{how}({show(key, 40)})", call, check)

        # kwargs and options
        for value in VALUES:
            for where in ("kwargs", "options"):
                clean()
                key = fuzz.fresh_key()

                def call(value=value, where=where, key=key):
                    if where == "kwargs":
                        return a.Loose.perform_later(key, value=value)
                    return a.Loose.perform_later(key, options={"value": value})

                def check(row, value=value, where=where):
                    wf = Workflow.objects.get(pk=row.pk)
                    stored = wf.kwargs if where == "kwargs" else wf.options
                    if not same(stored, {"value": value}):
                        return "altered", f"stored {show(stored, 60)}"
                    return fuzz.workflow_outcome(env, wf.key)

                fuzz.case(where, f"{show(value, 50)}", call, check)
        for kwargs in ({"orderid": 1}, {}, {"order_id": 1, "x": 2}, {"attempt": 1}):
            clean()
            key = fuzz.fresh_key()
            fuzz.case(
                "kwargs",
                f"Strict {kwargs}",
                lambda kwargs=kwargs, key=key: a.Strict.perform_later(key, **kwargs),
                lambda row: fuzz.workflow_outcome(env, row.key),
            )
        clean()
        fuzz.case("kwargs", "positional", lambda: a.Loose.perform_later(fuzz.fresh_key(), 1))
        for options in ("plan", ["a"], 1, ()):
            clean()
            fuzz.case(
                "options",
                f"options={options!r}",
                lambda options=options: a.Loose.perform_later(fuzz.fresh_key(), options=options),
            )

        # context keys and values
        for key_, value in [(k, 1) for k in CONTEXT_KEYS] + [("v", v) for v in VALUES]:
            clean()
            key = fuzz.fresh_key()
            a.FLAGS["context"] = {key_: value}

            def check(row, key_=key_, value=value, key=key):
                return fuzz.workflow_outcome(
                    env, key, stored=lambda wf: same(wf.context, {key_: value})
                )

            fuzz.case(
                "context",
                f"{show(key_, 30)}={show(value, 40)}",
                lambda key=key: a.WritesContext.perform_later(key),
                check,
            )

        # step results
        for value in VALUES:
            clean()
            key = fuzz.fresh_key()
            a.FLAGS["result"] = value

            def stored_result(wf, value=value):
                log = wf.execution_logs.filter(step_name="durably_execute$produce").first()
                return log is None or log.state != "completed" or same(log.result, value)

            fuzz.case(
                "results",
                f"{show(value, 50)}",
                lambda key=key: a.StoresResult.perform_later(key),
                lambda row, key=key, f=stored_result: fuzz.workflow_outcome(env, key, f),
            )

        # step names, on every primitive that takes one
        primitives = {
            "durably_execute": lambda wf, n: wf.durably_execute(wf.step, name=n),
            "wait": lambda wf, n: wf.wait(0, n),
            "wait_until": lambda wf, n: wf.wait_until(wf.ready, name=n),
            "continue_if": lambda wf, n: wf.continue_if(wf.ready, name=n),
            "durably_repeat": lambda wf, n: wf.durably_repeat(
                wf.step, every=60, till=wf.ready, name=n
            ),
            "branch": lambda wf, n: wf.branch(n, lambda: None, automerge=True),
            "merge_branches": lambda wf, n: (wf.branch("b", lambda: None), wf.merge_branches(n)),
        }
        for primitive, use in primitives.items():
            for name in NAMES:
                clean()
                key = fuzz.fresh_key()
                a.FLAGS["call"] = lambda wf, use=use, name=name: use(wf, name)
                fuzz.case(
                    "names",
                    f"{primitive}({show(name, 30)})",
                    lambda key=key: a.CallSite.perform_later(key),
                    lambda row, key=key: fuzz.workflow_outcome(env, key),
                )
        clean()
        key = fuzz.fresh_key()
        a.FLAGS["call"] = lambda wf: (wf.durably_execute(wf.step), wf.durably_execute(wf.step))
        fuzz.case(
            "names",
            "duplicate durably_execute",
            lambda key=key: a.CallSite.perform_later(key),
            lambda row, key=key: fuzz.workflow_outcome(env, key),
        )

        # durations
        timed = {
            "wait": lambda wf, d: wf.wait(d, "w"),
            "wait_until timeout": lambda wf, d: wf.wait_until(wf.ready, timeout=d),
            "wait_until check_interval": lambda wf, d: wf.wait_until(wf.ready, check_interval=d),
            "durably_repeat every": lambda wf, d: wf.durably_repeat(
                wf.step, every=d, till=wf.ready
            ),
            "durably_repeat timeout": lambda wf, d: wf.durably_repeat(
                wf.step, every=60, till=wf.ready, timeout=d
            ),
            "merge_branches min_interval": lambda wf, d: (
                wf.branch("b", lambda: None),
                wf.merge_branches("b", min_interval=d),
            ),
            "merge_branches max_interval": lambda wf, d: (
                wf.branch("b", lambda: None),
                wf.merge_branches("b", max_interval=d),
            ),
        }
        for what, use in timed.items():
            for duration in DURATIONS:
                clean()
                key = fuzz.fresh_key()
                a.FLAGS["call"] = lambda wf, use=use, duration=duration: use(wf, duration)
                fuzz.case(
                    "durations",
                    f"{what}={show(duration, 30)}",
                    lambda key=key: a.CallSite.perform_later(key),
                    lambda row, key=key: fuzz.workflow_outcome(env, key),
                )

        # policies: built, per call, per class
        for kwargs in POLICY_ARGS:
            fuzz.case(
                "policies", f"RetryPolicy(**{show(kwargs, 40)})", lambda k=kwargs: RetryPolicy(**k)
            )
        per_call = {
            "durably_execute": lambda wf, p: wf.durably_execute(wf.step, retry_policy=p),
            "wait_until": lambda wf, p: wf.wait_until(wf.ready, retry_policy=p),
            "durably_repeat": lambda wf, p: wf.durably_repeat(
                wf.step, every=60, till=wf.ready, retry_policy=p
            ),
        }
        for primitive, use in per_call.items():
            for policy in NOT_POLICIES:
                clean()
                key = fuzz.fresh_key()
                a.FLAGS["call"] = lambda wf, use=use, policy=policy: use(wf, policy)
                fuzz.case(
                    "policies",
                    f"{primitive}(retry_policy={show(policy, 30)})",
                    lambda key=key: a.CallSite.perform_later(key),
                    lambda row, key=key: fuzz.workflow_outcome(env, key),
                )
        for policy in NOT_POLICIES:
            fuzz.case(
                "policies",
                f"class retry_policy={show(policy, 30)}",
                lambda p=policy: type(
                    "FuzzPolicy",
                    (DurableWorkflow,),
                    {"retry_policy": p, "perform": a.Loose.perform},
                ),
            )

        # task payloads, aimed at a completed workflow (which they must leave as it is)
        a.Loose.perform_later("task-target")
        env.run_all()
        for args, kwargs in TASK_PAYLOADS:
            clean()
            fuzz.case(
                "tasks",
                f"run_workflow{show(args, 50)} {show(kwargs, 40)}",
                lambda args=args, kwargs=kwargs: run_workflow(*args, **kwargs),
                lambda result: fuzz.workflow_outcome(env, "task-target"),
            )

    # command arguments (outside the in-memory env: the command is what an operator runs)
    for argv in COMMANDS:
        out, err = io.StringIO(), io.StringIO()

        def call(argv=argv, out=out, err=err):
            return call_command("chrono_forge", *argv, stdout=out, stderr=err)

        def check(result, out=out, err=err):
            text = out.getvalue() + err.getvalue()
            return ("unclear", "-> printed a traceback") if "Traceback" in text else "accepted"

        fuzz.case("commands", " ".join(map(repr, argv)), call, check)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="list every failing case")
    options = parser.parse_args()
    import logging

    logging.disable(logging.CRITICAL)  # the counts are the output, not the engine's warnings
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    fuzz = Fuzz(options.verbose)
    try:
        run_catalogue(fuzz)
    except BaseException:  # the catalogue itself must not die silently
        traceback.print_exc()
        return 2
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    total = sum(fuzz.counts.values())
    print(f"chrono_forge fuzz on {connection.vendor}: {total} inputs")
    outcomes = ("clear", "accepted", "unclear", "altered", "stuck")
    print(f"{'category':<12}" + "".join(f"{o:>10}" for o in outcomes))
    for category, counts in fuzz.by_category.items():
        print(f"{category:<12}" + "".join(f"{counts[o]:>10}" for o in outcomes))
    print(f"{'total':<12}" + "".join(f"{fuzz.counts[o]:>10}" for o in outcomes))
    if fuzz.failures and (options.verbose or len(fuzz.failures) <= 40):
        print("\nnot clear:")
        for line in fuzz.failures:
            print("  " + line)
    bad = fuzz.counts["unclear"] + fuzz.counts["altered"] + fuzz.counts["stuck"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
