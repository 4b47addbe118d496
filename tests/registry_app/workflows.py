from chrono_forge import DurableWorkflow


class Discovered(DurableWorkflow):
    def perform(self):
        pass
