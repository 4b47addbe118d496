"""A module that must never be imported by chrono_forge: task payloads and rows name it, and the
registry tests check that it stays out of ``sys.modules``. Importing it records the fact."""

import os

from chrono_forge import DurableWorkflow

os.environ["CHRONO_FORGE_TRIPWIRE_IMPORTED"] = "1"


class Tripwire(DurableWorkflow):
    """A real workflow class in a module nobody imports: never registered, never run."""

    def perform(self):
        raise AssertionError("the tripwire workflow ran")
