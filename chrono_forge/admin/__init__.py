"""chrono_forge's Django admin: WorkflowAdmin (list, timeline, actions, operator pages),
ExecutionLogAdmin and ErrorLogAdmin. Registered on the default ``admin.site``."""

from .logs import ErrorLogAdmin, ExecutionLogAdmin
from .workflow import WorkflowAdmin

__all__ = ["WorkflowAdmin", "ExecutionLogAdmin", "ErrorLogAdmin"]
