"""The stored step-name format: every form the engine writes parses back to itself, byte for byte,
and anything else is refused with a clear error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chrono_forge import step_names
from chrono_forge.step_names import MalformedStepName, StepName

# A user-chosen name segment: validate_name forbids "$" (and merge names forbid ",").
segment = st.text(
    alphabet=st.characters(blacklist_characters="$,\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
)


@pytest.mark.parametrize("kind", step_names.KINDS)
def test_every_kind_round_trips(kind):
    raw = f"{kind}$charge"
    parsed = StepName.parse(raw)
    fields = (parsed.kind, parsed.name, parsed.tick, parsed.is_marker)
    assert fields == (kind, "charge", None, False)
    assert parsed.format() == raw == str(parsed)
    assert StepName.kind_of(raw) == kind


@given(kind=st.sampled_from(step_names.KINDS), name=segment)
def test_any_valid_name_round_trips(kind, name):
    raw = f"{kind}${name}"
    assert StepName.parse(raw).format() == raw


@given(name=segment, tick=st.integers(min_value=0, max_value=2**40))
def test_repetition_names_round_trip(name, tick):
    raw = step_names.repetition_name(f"durably_repeat${name}", tick)
    assert raw == f"durably_repeat${name}${tick}"
    parsed = StepName.parse(raw)
    assert parsed.is_repetition and parsed.tick == tick and parsed.name == name
    assert parsed.coordination == f"durably_repeat${name}"
    assert parsed.format() == raw
    assert step_names.tick_seconds(raw, step_names.repetition_prefix(name)) == tick


def test_repetition_prefix_accepts_the_coordination_log_or_the_bare_name():
    assert step_names.repetition_prefix("durably_repeat$a") == "durably_repeat$a$"
    assert step_names.repetition_prefix("a") == "durably_repeat$a$"


def test_tick_seconds_needs_the_exact_prefix_and_whole_seconds():
    assert step_names.tick_seconds("durably_repeat$axb$17", "durably_repeat$a_b$") is None
    assert step_names.tick_seconds("durably_repeat$a$17x", "durably_repeat$a$") is None
    assert step_names.tick_seconds("durably_repeat$a$", "durably_repeat$a$") is None


def test_markers_are_the_stored_bytes():
    assert step_names.completion_marker() == "$workflow_completion$"
    assert step_names.failure_marker(42) == "$workflow_failure$42"
    assert step_names.retry_marker(1700000000) == "$workflow_retry$1700000000"
    for raw, marker, ref in [
        ("$workflow_completion$", "workflow_completion", ""),
        ("$workflow_failure$42", "workflow_failure", "42"),
        ("$workflow_failure$0b7e-uuid", "workflow_failure", "0b7e-uuid"),
        ("$workflow_retry$1700000000", "workflow_retry", "1700000000"),
    ]:
        parsed = StepName.parse(raw)
        assert (parsed.kind, parsed.marker, parsed.ref, parsed.is_marker) == ("", marker, ref, True)
        assert parsed.format() == raw
        assert StepName.kind_of(raw) == ""


def test_merge_names_list_their_branches():
    assert StepName.parse("merge$a,b").branches == ["a", "b"]
    assert step_names.merge_branches("merge$a,b") == ["a", "b"]
    assert step_names.merge_branches("branch$a") is None
    with pytest.raises(ValueError):
        StepName.parse("branch$a").branches  # noqa: B018


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "charge",  # no separator
        "nope$charge",  # unknown kind
        "durably_execute$",  # empty name
        "durably_execute$a$1",  # a second "$" outside a repetition log
        "durably_repeat$a$1x",  # a repetition log ends in whole seconds
        "durably_repeat$$1",  # a repetition log of an empty name
        "$workflow_nope$",  # unknown marker
        "$workflow_completion$x",  # the completion marker carries nothing
        "$workflow_retry$soon",  # a retry marker ends in unix seconds
        "$workflow_failure$",  # a failure marker names its error log
        "$workflow_failure",  # no closing separator
    ],
)
def test_malformed_names_are_refused(raw):
    with pytest.raises(MalformedStepName):
        StepName.parse(raw)


def test_a_non_string_is_refused():
    with pytest.raises(MalformedStepName, match="str"):
        StepName.parse(None)  # type: ignore[arg-type]


def test_a_coordination_log_is_not_a_repetition():
    parsed = StepName.parse("durably_repeat$a")
    assert not parsed.is_repetition
    with pytest.raises(ValueError):
        parsed.coordination  # noqa: B018


@pytest.mark.django_db
def test_query_fragments_pick_coordination_and_repetition_logs():
    from chrono_forge.models import ExecutionLog, Workflow

    wf = Workflow.objects.create(job_class="x.Y", key="k")
    names = [
        "durably_repeat$a",
        "durably_repeat$a$1700000000",
        "durably_execute$a",
        "$workflow_retry$1700000000",
    ]
    for name in names:
        ExecutionLog.objects.create(workflow=wf, step_name=name)
    logs = ExecutionLog.objects.filter(workflow=wf)
    assert list(
        logs.filter(step_names.coordination_logs_q()).values_list("step_name", flat=True)
    ) == ["durably_repeat$a"]
    assert list(
        logs.filter(step_names.repetition_logs_q()).values_list("step_name", flat=True)
    ) == ["durably_repeat$a$1700000000"]
    assert list(
        logs.filter(step_name__startswith=step_names.kind_prefix("")).values_list(
            "step_name", flat=True
        )
    ) == ["$workflow_retry$1700000000"]
