"""OpenTelemetry traces and metrics of passes and steps (the optional ``otel`` extra).

With ``opentelemetry-api`` installed, chrono_forge reports through the global tracer and meter
providers your project configures (with the SDK, or ``opentelemetry-instrument``); without them
the API's own no-op providers make it cost next to nothing. Without ``opentelemetry-api`` every
hook here is a no-op and nothing is imported.

Spans (tracer ``chrono_forge``):

* ``chrono_forge.pass``: one pass of a workflow (kind CONSUMER). Attributes
  ``chrono_forge.job_class``, ``chrono_forge.key``, ``chrono_forge.attempt`` (the workflow-level
  attempt) and ``chrono_forge.outcome``: ``completed``, ``failed``, ``stalled``, ``waiting`` (idle:
  scheduled or parked on an event), ``skipped`` (nothing to run: a superseded or duplicate
  delivery, a finished run) or ``error`` (the pass raised, e.g. the lock was taken).
* ``chrono_forge.step``: one attempt of a step body (``durably_execute``, a ``durably_repeat``
  tick), a child of its pass. Attributes ``chrono_forge.job_class``, ``.key``, ``.step``,
  ``.attempt`` (the step's attempt) and ``.outcome`` (``ok``, ``error`` or ``halted``). A body that
  raises records the exception on the span and sets its status to ERROR.

Trace context: ``perform_later``, ``retry_later`` and a wake-up made outside a pass carry the
current trace context (W3C ``traceparent``, through the configured propagator) in the task
payload (the internal argument ``trace_context``), and the pass they start is a child of the span
that enqueued it. Continuations a pass schedules do not carry it: each later pass is a trace of
its own, so a workflow that waits for months does not make a months-long trace.

Until the project sets a tracer or a meter provider, the API's defaults record nothing, and the
hooks skip them: a step body runs with no span, attributes or instrument calls around it, and a
pass only marks itself as one. A pass whose delivery carries a trace context still goes through
the API, whose no-op tracer makes that context the current one inside the pass (an instrumented
client in a step body propagates it).

Metrics (meter ``chrono_forge``):

* ``chrono_forge.passes`` (counter): passes, by ``chrono_forge.job_class`` and ``.outcome``.
* ``chrono_forge.steps`` (counter): step body attempts, by ``.job_class`` and ``.outcome``.
* ``chrono_forge.failures`` (counter): recorded errors (each also an ErrorLog row), by
  ``.job_class`` and ``chrono_forge.kind`` (``step`` or ``workflow``).
* ``chrono_forge.step.duration`` (histogram, s): a step body's run time, by ``.job_class`` and
  ``.step``.
* ``chrono_forge.pass.delay`` (histogram, s): from a delivery's due time (the enqueue, for
  ``perform_later``) to the start of its pass, by ``.job_class``: queue lag plus, for delayed
  continuations, the broker's lateness.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import clock
from .exceptions import HaltExecution

try:
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed: every hook is a no-op
    trace = None  # type: ignore[assignment]  # the hooks test it before any use
else:
    try:  # the global meter provider's stand-in until one is set (not exported by the API)
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # pragma: no cover - moved in a later API: count every provider as set
        _UNSET_METER_PROVIDERS: tuple[type, ...] = ()
    else:
        _UNSET_METER_PROVIDERS = (_ProxyMeterProvider, metrics.NoOpMeterProvider)
    _UNSET_TRACER_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)

if TYPE_CHECKING:  # pragma: no cover
    from .executor import Delivery, Pass

#: Whether opentelemetry-api is importable (the hooks do nothing otherwise).
ENABLED = trace is not None

#: The ``trace_context`` carrier travels in a task payload: at most this many entries of
#: this many characters (a traceparent is 55, a tracestate at most 512).
CARRIER_MAX_ENTRIES = 16
CARRIER_MAX_LENGTH = 1024

NAME = "chrono_forge"
_NULL = contextlib.nullcontext()
#: Set while a pass runs in this context: enqueues made by a pass carry no trace context.
_in_pass: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "chrono_forge_in_pass", default=False
)
_instruments: dict[str, Any] = {}
_configured = False


def configured() -> bool:
    """Whether a tracer or a meter provider other than the API's no-op defaults is set. A
    global provider is set at most once and never unset, so a True answer is kept; until then
    each call asks again (two lookups), so a provider set after the first pass is seen."""
    global _configured
    if not _configured:
        _configured = not isinstance(
            trace.get_tracer_provider(), _UNSET_TRACER_PROVIDERS
        ) or not isinstance(metrics.get_meter_provider(), _UNSET_METER_PROVIDERS)
    return _configured


def _instrument(name: str) -> Any:
    """The metric instruments, created on first use (on the global meter provider's proxy)."""
    if not _instruments:
        meter = metrics.get_meter(NAME)
        _instruments.update(
            passes=meter.create_counter(
                "chrono_forge.passes", unit="{pass}", description="Workflow passes, by outcome"
            ),
            steps=meter.create_counter(
                "chrono_forge.steps", unit="{attempt}", description="Step body attempts"
            ),
            failures=meter.create_counter(
                "chrono_forge.failures", unit="{error}", description="Recorded errors"
            ),
            step_duration=meter.create_histogram(
                "chrono_forge.step.duration", unit="s", description="Run time of a step body"
            ),
            pass_delay=meter.create_histogram(
                "chrono_forge.pass.delay",
                unit="s",
                description="From a delivery's due time to the start of its pass",
            ),
        )
    return _instruments[name]


def _tracer():
    return trace.get_tracer(NAME)


def carrier() -> dict[str, str] | None:
    """The current trace context as a payload carrier, or None (no otel, no active span, or
    called from inside a pass)."""
    if not ENABLED or _in_pass.get():
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    found: dict[str, str] = {}
    propagate.inject(found)
    return found or None


def _outcome(delivery: Delivery) -> str:
    if delivery.acquired is None:
        return "skipped"
    state = delivery.acquired.row.state
    return "waiting" if state == "idle" else state


def pass_span(run: Delivery):
    """Around one pass: its span, the pass counter and the delivery delay."""
    if not ENABLED:
        return _NULL
    if not run.trace_context and not configured():
        return _marked_pass()
    return _pass_span(run)


@contextlib.contextmanager
def _marked_pass() -> Iterator[None]:
    """Marks the code inside as a pass, which keeps its enqueues' payloads free of the trace
    context current outside it: all a pass with nothing to record does, and part of a span."""
    marker = _in_pass.set(True)
    try:
        yield
    finally:
        _in_pass.reset(marker)


@contextlib.contextmanager
def _pass_span(run: Delivery) -> Iterator[None]:
    parent = propagate.extract(run.trace_context) if run.trace_context else None
    started = clock.now()
    attributes = {
        "chrono_forge.job_class": run.job_class,
        "chrono_forge.key": run.key,
        "chrono_forge.attempt": run.attempt,
    }
    outcome = "error"
    try:
        with (
            _marked_pass(),
            _tracer().start_as_current_span(
                "chrono_forge.pass",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
        ):
            try:
                yield
                outcome = _outcome(run)
            except BaseException as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                raise
            finally:
                span.set_attribute("chrono_forge.outcome", outcome)
    finally:
        labels = {"chrono_forge.job_class": run.job_class}
        _instrument("passes").add(1, {**labels, "chrono_forge.outcome": outcome})
        if run.acquired is not None and run.token is not None:
            due = datetime.fromisoformat(run.token)
            delay = max((started - due).total_seconds(), 0.0)
            _instrument("pass_delay").record(delay, labels)


def step_span(run: Pass, step: str, attempt: int):
    """Around one attempt of a step body: its span, the step counter and the duration."""
    if not ENABLED or not configured():
        return _NULL
    return _step_span(run, step, attempt)


@contextlib.contextmanager
def _step_span(run: Pass, step: str, attempt: int) -> Iterator[None]:
    attributes = {
        "chrono_forge.job_class": run.job_class,
        "chrono_forge.key": run.key,
        "chrono_forge.step": step,
        "chrono_forge.attempt": attempt,
    }
    outcome = "ok"
    started = time.perf_counter()
    with _tracer().start_as_current_span(
        "chrono_forge.step",
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except HaltExecution:
            outcome = "halted"
            raise
        except BaseException as error:
            outcome = "error"
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            raise
        finally:
            span.set_attribute("chrono_forge.outcome", outcome)
            labels = {"chrono_forge.job_class": run.job_class}
            _instrument("steps").add(1, {**labels, "chrono_forge.outcome": outcome})
            _instrument("step_duration").record(
                time.perf_counter() - started, {**labels, "chrono_forge.step": step}
            )


def failure(run: Pass, step_name: str | None) -> None:
    """An error was recorded (an ErrorLog row) for a step, or for the workflow itself."""
    if not ENABLED or not configured():
        return
    kind = "workflow" if step_name is None else "step"
    _instrument("failures").add(
        1, {"chrono_forge.job_class": run.job_class, "chrono_forge.kind": kind}
    )
