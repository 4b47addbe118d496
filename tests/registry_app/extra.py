"""Listed in CHRONO_FORGE["WORKFLOW_MODULES"] by the registry tests."""

from chrono_forge import DurableWorkflow


class Listed(DurableWorkflow):
    def perform(self):
        pass
