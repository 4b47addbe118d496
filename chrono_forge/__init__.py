"""chrono_forge: durable workflows written as plain Python methods, for Django and django-q2."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .retry import CompositeRetryPolicy, RetryPolicy  # a leaf: no Django import

__version__ = "0.1.0"

__all__ = ["DurableWorkflow", "RetryPolicy", "CompositeRetryPolicy", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .workflow import DurableWorkflow


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import models before Django's app registry is ready.
    if name == "DurableWorkflow":
        from .workflow import DurableWorkflow

        return DurableWorkflow
    raise AttributeError(f"module 'chrono_forge' has no attribute {name!r}")
