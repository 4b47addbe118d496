import pytest

from chrono_forge.models import ErrorLog, ExecutionLog, Workflow
from tests import workflows as w

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def reset_calls():
    w.CALLS.clear()


def test_simple(chrono_forge_env):
    wf = w.Simple.perform_later("k1", value=3)
    assert chrono_forge_env.run_all() == 1
    wf.refresh_from_db()
    assert wf.state == "completed", wf.state
    assert wf.context == {"first": {"value": 42}}
    assert list(wf.execution_logs.order_by("id").values_list("step_name", flat=True)) == [
        "durably_execute$first", "durably_execute$second_step", "$workflow_completion$"]
    assert wf.locked_by is None


def test_flaky(chrono_forge_env):
    w.FlakyOnce.perform_later("k")
    chrono_forge_env.run_all()
    wf = Workflow.objects.get()
    assert wf.state == "completed"
    assert ErrorLog.objects.count() == 1


def test_always(chrono_forge_env):
    w.AlwaysFails.perform_later("k")
    chrono_forge_env.run_all()
    wf = Workflow.objects.get()
    assert wf.state == "stalled"
    assert list(ErrorLog.objects.values_list("attempt", flat=True).order_by("id")) == [1, 2, 3]


def test_permanent(chrono_forge_env):
    w.PermanentFailure.perform_later("k")
    chrono_forge_env.run_all()
    wf = Workflow.objects.get()
    assert wf.state == "failed"
    assert ErrorLog.objects.count() == 10


def test_wake_during_pass_is_not_lost(chrono_forge_env):
    """A perform_later that arrives while a pass holds the lock is published when that pass releases."""
    from chrono_forge import tasks

    class Probe:
        inner_done = False

    wf = w.NoSteps.perform_later("wake")
    chrono_forge_env.drop_pending()
    original = w.NoSteps.perform

    def perform(self):
        if not Probe.inner_done:
            Probe.inner_done = True
            tasks.run_workflow(self.workflow.job_class, self.key)  # the concurrent wake: locked -> flagged
            assert Workflow.objects.get(pk=self.workflow.pk).wake_requested is True
            from chrono_forge.exceptions import HaltExecution
            raise HaltExecution()  # park with nothing scheduled
        original(self)

    w.NoSteps.perform = perform
    try:
        tasks.run_workflow(wf.job_class, wf.key)
        wf.refresh_from_db()
        assert wf.state == "idle" and wf.wake_requested is False
        assert len(chrono_forge_env.pending) == 1  # the wake was carried over, not dropped
        chrono_forge_env.run_all()
    finally:
        w.NoSteps.perform = original
    wf.refresh_from_db()
    assert wf.state == "completed"
