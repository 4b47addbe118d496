"""pytest plugin (registered through the ``pytest11`` entry point): the ``chrono_forge_env`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def chrono_forge_env() -> Iterator:
    """A :class:`chrono_forge.testing.WorkflowEnv`: in-memory dispatcher and a controllable clock."""
    from chrono_forge.testing import workflow_env

    with workflow_env() as env:
        yield env
