"""chrono_forge.telemetry with the OpenTelemetry SDK's in-memory exporters: a span per pass and per
step body, errors on the spans, the enqueuer's trace context carried into the pass through the task
payload, and the counters and histograms; and nothing at all without opentelemetry-api."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from chrono_forge import payloads, tasks, telemetry
from chrono_forge.dispatch import token_for
from tests import workflows_signals as ws

pytestmark = pytest.mark.django_db

EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()


class Switch(SimpleSpanProcessor):
    """Exports only while a test of this module runs (the global provider outlives it)."""

    active = False

    def on_end(self, span):
        if self.active:
            super().on_end(span)


SWITCH = Switch(EXPORTER)
_installed: list[bool] = []


@pytest.fixture
def otel():
    """The SDK as a project would configure it: global providers (set once per process)."""
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(SWITCH)
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
        _installed.append(True)
    EXPORTER.clear()
    SWITCH.active = True
    yield EXPORTER
    SWITCH.active = False
    EXPORTER.clear()


def spans(name: str) -> list:
    return [span for span in EXPORTER.get_finished_spans() if span.name == name]


def metric_points(name: str) -> list:
    data = READER.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def counter(name: str, **attributes) -> float:
    wanted = {f"chrono_forge.{k}": v for k, v in attributes.items()}
    return sum(
        point.value
        for point in metric_points(name)
        if all(point.attributes.get(k) == v for k, v in wanted.items())
    )


def histogram(name: str, **attributes) -> tuple[int, float]:
    wanted = {f"chrono_forge.{k}": v for k, v in attributes.items()}
    points = [
        point
        for point in metric_points(name)
        if all(point.attributes.get(k) == v for k, v in wanted.items())
    ]
    return sum(p.count for p in points), sum(p.sum for p in points)


def test_a_span_per_pass_and_per_step_body(otel, chrono_forge_env):
    ws.TwoSteps.perform_later("spans", wait=60)
    assert chrono_forge_env.run_all() == 2
    passes = spans("chrono_forge.pass")
    assert [p.attributes["chrono_forge.outcome"] for p in passes] == ["waiting", "completed"]
    for span in passes:
        assert span.attributes["chrono_forge.job_class"] == "tests.workflows_signals.TwoSteps"
        assert span.attributes["chrono_forge.key"] == "spans"
        assert span.attributes["chrono_forge.attempt"] == 0
        assert span.kind == trace.SpanKind.CONSUMER
    steps = spans("chrono_forge.step")
    assert [s.attributes["chrono_forge.step"] for s in steps] == [
        "durably_execute$first",
        "durably_execute$second",
    ]
    assert [s.attributes["chrono_forge.outcome"] for s in steps] == ["ok", "ok"]
    assert [s.attributes["chrono_forge.attempt"] for s in steps] == [1, 1]
    # Each step body is a child of the pass that ran it (replayed steps have no span).
    assert steps[0].parent.span_id == passes[0].context.span_id
    assert steps[1].parent.span_id == passes[1].context.span_id


def test_a_delivery_with_nothing_to_run_is_a_skipped_pass_without_a_delay(otel, chrono_forge_env):
    ws.TwoSteps.perform_later("skip")
    assert chrono_forge_env.run_all() == 1
    job = ws.TwoSteps.job_class()
    delays = histogram("chrono_forge.pass.delay", job_class=job)[0]
    EXPORTER.clear()
    tasks.run_workflow(job, "skip", token=token_for(chrono_forge_env.now))  # superseded: completed
    [span] = spans("chrono_forge.pass")
    assert span.attributes["chrono_forge.outcome"] == "skipped"
    assert histogram("chrono_forge.pass.delay", job_class=job)[0] == delays


def test_a_failing_step_records_the_error_on_its_span(otel, chrono_forge_env):
    ws.FlakyStep.perform_later("flaky")
    chrono_forge_env.run_all()
    steps = spans("chrono_forge.step")
    assert [s.attributes["chrono_forge.outcome"] for s in steps] == ["error", "ok"]
    assert [s.attributes["chrono_forge.attempt"] for s in steps] == [1, 2]
    failed = steps[0]
    assert failed.status.status_code == StatusCode.ERROR
    assert "first attempt" in failed.status.description
    (event,) = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.type"].endswith("Fails")
    assert [p.attributes["chrono_forge.outcome"] for p in spans("chrono_forge.pass")] == [
        "waiting",
        "completed",
    ]


def test_a_stalled_and_a_failed_run_have_their_outcome(otel, chrono_forge_env):
    ws.FailingStep.perform_later("stall")
    ws.FailingWorkflow.perform_later("fail")
    chrono_forge_env.run_all()
    outcomes = {
        (p.attributes["chrono_forge.key"], p.attributes["chrono_forge.outcome"])
        for p in spans("chrono_forge.pass")
    }
    assert ("stall", "stalled") in outcomes and ("fail", "failed") in outcomes


def test_the_trace_context_crosses_perform_later_into_the_pass(otel, chrono_forge_env):
    tracer = trace.get_tracer("the-application")
    with tracer.start_as_current_span("POST /orders") as request:
        ws.TwoSteps.perform_later("traced", wait=60)
    (pending,) = chrono_forge_env.pending
    assert set(pending.kwargs["trace_context"]) >= {"traceparent"}  # in the task payload
    chrono_forge_env.run_all()
    first, second = spans("chrono_forge.pass")
    assert first.context.trace_id == request.get_span_context().trace_id
    assert first.parent.span_id == request.get_span_context().span_id
    # The continuation the pass scheduled starts a trace of its own.
    assert second.parent is None
    assert second.context.trace_id != request.get_span_context().trace_id


def test_no_trace_context_travels_without_an_active_span(otel, chrono_forge_env):
    ws.TwoSteps.perform_later("untraced")
    (pending,) = chrono_forge_env.pending
    assert "trace_context" not in pending.kwargs
    chrono_forge_env.run_all()
    (span,) = spans("chrono_forge.pass")
    assert span.parent is None


def test_counters_and_histograms(otel, chrono_forge_env):
    job = "tests.workflows_signals.FailingStep"
    before = {
        "passes": counter("chrono_forge.passes", job_class=job, outcome="stalled"),
        "waiting": counter("chrono_forge.passes", job_class=job, outcome="waiting"),
        "steps": counter("chrono_forge.steps", job_class=job, outcome="error"),
        "failures": counter("chrono_forge.failures", job_class=job, kind="step"),
        "duration": histogram("chrono_forge.step.duration", job_class=job)[0],
        "delay": histogram("chrono_forge.pass.delay", job_class=job),
    }
    ws.FailingStep.perform_later("metrics")
    chrono_forge_env.advance(timedelta(seconds=5))  # the first delivery starts 5 s late
    chrono_forge_env.run_all()
    assert counter("chrono_forge.passes", job_class=job, outcome="waiting") - before["waiting"] == 1
    assert counter("chrono_forge.passes", job_class=job, outcome="stalled") - before["passes"] == 1
    assert counter("chrono_forge.steps", job_class=job, outcome="error") - before["steps"] == 2
    assert counter("chrono_forge.failures", job_class=job, kind="step") - before["failures"] == 2
    assert histogram("chrono_forge.step.duration", job_class=job)[0] - before["duration"] == 2
    count, total = histogram("chrono_forge.pass.delay", job_class=job)
    assert count - before["delay"][0] == 2  # both deliveries carried their due time
    assert total - before["delay"][1] == pytest.approx(5.0)  # the retry was due at once


def test_a_workflow_level_failure_is_counted_as_one(otel, chrono_forge_env):
    job = "tests.workflows_signals.FailingWorkflow"
    before = counter("chrono_forge.failures", job_class=job, kind="workflow")
    ws.FailingWorkflow.perform_later("wf-failure")
    chrono_forge_env.run_all()
    assert counter("chrono_forge.failures", job_class=job, kind="workflow") - before == 1


@pytest.mark.parametrize(
    "value",
    [
        "traceparent",
        {},
        {"traceparent": 7},
        {7: "x"},
        {"traceparent": "x" * (telemetry.CARRIER_MAX_LENGTH + 1)},
        {f"k{i}": "v" for i in range(telemetry.CARRIER_MAX_ENTRIES + 1)},
    ],
)
def test_run_workflow_refuses_a_malformed_trace_context(value):
    with pytest.raises(payloads.PayloadError, match="trace_context must be"):
        payloads.run_workflow(("tests.workflows_signals.TwoSteps", "k"), {"trace_context": value})


def test_run_workflow_accepts_a_carrier():
    carrier = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    checked = payloads.run_workflow(("a.B", "k"), {"trace_context": carrier})
    assert checked["trace_context"] == carrier


def test_without_opentelemetry_the_hooks_do_nothing_and_import_nothing():
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from chrono_forge import telemetry
assert telemetry.ENABLED is False
assert telemetry.carrier() is None
assert telemetry.pass_span(None) is telemetry._NULL
assert telemetry.step_span(None, "s", 1) is telemetry._NULL
telemetry.failure(None, "s")
assert not [m for m in sys.modules if m.startswith("opentelemetry.")], "imported"
print("no-op")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no-op"


def test_without_a_provider_a_step_builds_no_span_and_a_later_provider_is_seen():
    """No tracer or meter provider set (a fresh process: this module's fixture sets them for
    good): a step body gets the shared null context (the run is not even read, so no attribute
    dict is built) and the API's tracer is never asked; a pass only marks itself as one. Once a
    provider is set, the next step and pass make their spans."""
    script = """
from types import SimpleNamespace
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from chrono_forge import telemetry

def refuse(*args, **kwargs):
    raise AssertionError("the API's tracer was asked for")

real_get_tracer, trace.get_tracer = trace.get_tracer, refuse
assert telemetry.configured() is False
assert telemetry.step_span(None, "durably_execute$s", 1) is telemetry._NULL
telemetry.failure(None, "durably_execute$s")
delivery = SimpleNamespace(trace_context=None, job_class="a.B", key="k", attempt=0)
with telemetry.pass_span(delivery):
    assert telemetry._in_pass.get() is True
    assert telemetry.carrier() is None
assert telemetry._in_pass.get() is False
assert not telemetry._instruments, "instruments created"

trace.get_tracer = real_get_tracer
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
assert telemetry.configured() is True
delivery.acquired = delivery.token = None
with telemetry.pass_span(delivery):
    with telemetry.step_span(delivery, "durably_execute$s", 1):
        pass
print(sorted(span.name for span in exporter.get_finished_spans()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['chrono_forge.pass', 'chrono_forge.step']"


# --- under a real qcluster ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_real_workers_pass_continues_the_trace_of_the_request_that_enqueued_it(
    otel, qcluster, tmp_path
):
    """The trace context travels in the task payload through the ORM broker to another process:
    the worker's pass span is a child of the span that called perform_later, its step spans are
    children of the pass, and the continuation after a durable wait starts a trace of its own."""
    import json

    from tests.helpers import wait_for

    spans_file = tmp_path / "worker-spans.jsonl"
    spans_file.touch()
    cluster = qcluster(
        extra_env={
            "DJANGO_SETTINGS_MODULE": "tests.settings_qcluster_otel",
            "CHRONO_FORGE_TEST_SPANS": str(spans_file),
        }
    )
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("web request") as request_span:
        wf = ws.TwoSteps.perform_later("otel-e2e", wait=0.5)
    request = request_span.get_span_context()

    def finished():
        wf.refresh_from_db()
        return wf.state in ("completed", "failed", "stalled")

    wait_for(finished, timeout=30, message="the workflow to finish under the qcluster")
    assert wf.state == "completed", cluster.log_tail()
    assert cluster.stop() == 0  # SimpleSpanProcessor exported each span as it ended

    worker_spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    passes = [s for s in worker_spans if s["name"] == "chrono_forge.pass"]
    steps = {
        s["attributes"]["chrono_forge.step"]: s
        for s in worker_spans
        if s["name"] == "chrono_forge.step"
    }
    assert len(passes) == 2, worker_spans  # the first pass, then the one after the wait
    first, later = passes
    assert first["trace_id"] == f"{request.trace_id:032x}"
    assert first["parent_span_id"] == f"{request.span_id:016x}"
    assert first["attributes"]["chrono_forge.key"] == "otel-e2e"
    assert first["attributes"]["chrono_forge.outcome"] == "waiting"
    assert later["attributes"]["chrono_forge.outcome"] == "completed"
    assert later["trace_id"] != first["trace_id"] and later["parent_span_id"] is None
    assert steps["durably_execute$first"]["parent_span_id"] == first["span_id"]
    assert steps["durably_execute$second"]["parent_span_id"] == later["span_id"]
