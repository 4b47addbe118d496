"""pytest plugin (registered through the ``pytest11`` entry point): the ``chrono_forge_env`` and
``chrono_forge_crash_safe`` fixtures.

pytest loads this module before Django is set up, so the fixtures import chrono_forge's testing
helpers (which import the models) only when a test uses them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def chrono_forge_env() -> Iterator:
    """A :class:`chrono_forge.testing.WorkflowEnv`: in-memory dispatcher, controllable clock."""
    # here: pytest loads this plugin before Django is set up, and testing imports the models
    from chrono_forge.testing import workflow_env

    with workflow_env() as env:
        yield env


@pytest.fixture
def chrono_forge_crash_safe(request):
    """:func:`chrono_forge.testing.assert_crash_safe` with database access:
    ``chrono_forge_crash_safe(OrderWorkflow, "order-1", order_id=1)`` -> a ``CrashReport``."""
    # here: as above, the models must not load with the plugin
    from chrono_forge.testing import assert_crash_safe

    request.getfixturevalue("db")  # pytest-django's, or the test's own django_db mark
    return assert_crash_safe
