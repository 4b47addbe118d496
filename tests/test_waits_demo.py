"""The example project's wait/periodic demo uses each kind of wait and finishes in seconds."""

from datetime import timedelta

import pytest

from chrono_forge.models import ExecutionLog
from example_project.demo.workflows import ParcelDeliveryWorkflow

pytestmark = pytest.mark.django_db


def test_parcel_delivery_demo(chrono_forge_env):
    start = chrono_forge_env.now
    wf = ParcelDeliveryWorkflow.perform_later("parcel", parcel_id=1)
    chrono_forge_env.run_all()
    wf.refresh_from_db()
    assert wf.state == "completed"
    # 2 s wait, a second carrier check 1 s later, tracking updates at +3, +4, +5 s
    assert wf.completed_at == start + timedelta(seconds=5)
    assert wf.context["carrier_checks"] == 2
    ticks = [start + timedelta(seconds=s) for s in (3, 4, 5)]
    assert wf.context["tracking_updates"] == [t.isoformat() for t in ticks]
    names = set(ExecutionLog.objects.filter(workflow=wf).values_list("step_name", flat=True))
    assert {
        "wait$cooling_off",
        "wait_until$carrier_has_parcel",
        "durably_repeat$send_tracking_update",
        "durably_execute$close_parcel",
    } <= names
    assert len([n for n in names if n.startswith("durably_repeat$send_tracking_update$")]) == 3
