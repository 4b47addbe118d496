"""The registry of workflow classes: ``job_class`` (the dotted path stored on each row) -> class.

A worker runs only classes registered here, and never imports a module because a task payload or a
row names it: the modules that define workflows are imported at start-up instead.

* Every ``DurableWorkflow`` subclass defined at module level registers itself when its module is
  imported (``DurableWorkflow.__init_subclass__`` calls :func:`register`). A class defined inside a
  function (``<locals>`` in its qualified name) is not registered: nothing could find it again.
* ``AppConfig.ready`` imports the ``workflows`` module of every installed app (as the admin does
  with ``admin.py``) and every module listed in ``CHRONO_FORGE["WORKFLOW_MODULES"]``.

This module imports neither the models nor the engine, so anything may import it.
"""

from __future__ import annotations

import logging
import os
import socket
from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import autodiscover_modules

from . import conf
from .exceptions import UnregisteredWorkflowClass

if TYPE_CHECKING:  # for annotations only: at run time the registry imports no engine module
    from .workflow import DurableWorkflow

logger = logging.getLogger("chrono_forge")

#: The name of the module autodiscovered in every installed app.
MODULE_NAME = "workflows"

_classes: dict[str, type[DurableWorkflow]] = {}


def job_class_of(cls: type) -> str | None:
    """The dotted path a row stores for ``cls``, or None for a class defined inside a function."""
    if "<locals>" in cls.__qualname__:
        return None
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type[DurableWorkflow]) -> None:
    """Register ``cls`` under its dotted path (a later class of the same path replaces it, as a
    reloaded module's does); a class defined inside a function is left out."""
    job_class = job_class_of(cls)
    if job_class is not None:
        _classes[job_class] = cls


def unregister(job_class: str) -> type[DurableWorkflow] | None:
    """Forget one class (tests use it to play a worker that runs older code); returns it."""
    return _classes.pop(job_class, None)


def get(job_class: Any) -> type[DurableWorkflow] | None:
    """The class registered under ``job_class``, or None. Never imports anything."""
    return _classes.get(job_class) if isinstance(job_class, str) else None


def registered() -> dict[str, type[DurableWorkflow]]:
    """A copy of the registry."""
    return dict(_classes)


def resolve(job_class: Any) -> type[DurableWorkflow]:
    """The class registered under ``job_class``, or :class:`UnregisteredWorkflowClass` saying why a
    class can be missing and what to do."""
    cls = get(job_class)
    if cls is None:
        raise UnregisteredWorkflowClass(not_registered_message(job_class))
    return cls


def not_registered_message(job_class: Any) -> str:
    return (
        f"{job_class!r} is not a registered workflow class in this process "
        f"({socket.gethostname()}, pid {os.getpid()}). Either the class was renamed or removed "
        "(restore it, or leave this workflow stalled), or this worker runs older code than the "
        "process that started the workflow (restart the workers after every deploy). Workflow "
        f"classes register when their module is imported: define them in a `{MODULE_NAME}` module "
        "of an installed app, or list their module in CHRONO_FORGE['WORKFLOW_MODULES']. Retry the "
        "workflow once the class is back."
    )


def configured_modules() -> list[str]:
    """``CHRONO_FORGE["WORKFLOW_MODULES"]`` when it is a list or tuple of strings (else empty: the
    system check ``chrono_forge.E020`` reports it)."""
    value = conf.get("WORKFLOW_MODULES")
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return []
    return list(value)


def autodiscover() -> None:
    """Import every installed app's ``workflows`` module, then ``WORKFLOW_MODULES``.

    An app's own ``workflows`` module that fails to import raises, as a broken ``admin.py`` does. A
    ``WORKFLOW_MODULES`` entry that fails is logged and left to the system check, which reports it
    with its error (``manage.py check`` must be able to run to say so).
    """
    autodiscover_modules(MODULE_NAME)
    for path in configured_modules():
        try:
            import_module(path)
        except Exception as error:
            logger.error(
                "chrono_forge: CHRONO_FORGE['WORKFLOW_MODULES'] entry %r cannot be imported "
                "(%s: %s); its workflow classes are not registered",
                path,
                type(error).__name__,
                error,
            )
