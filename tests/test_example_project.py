"""The example project's demo workflows end in the states scripts/demo --check expects."""

import pytest

from chrono_forge.models import Workflow
from example_project.demo.workflows import DEMOS

pytestmark = pytest.mark.django_db


def test_demo_workflows_reach_their_expected_states(chrono_forge_env):
    for demo in DEMOS:
        demo.workflow_class.perform_later(demo.key, **demo.kwargs)

    chrono_forge_env.run_all()

    states = dict(Workflow.objects.values_list("key", "state"))
    assert states == {demo.key: demo.expected_state for demo in DEMOS}
    assert "stalled" in states.values()  # the admin demo needs one stalled workflow
