"""Settings of a db_worker process: the test settings with chrono_forge's Django Tasks dispatcher
(passes and continuations as django.tasks tasks on django-tasks-db's DatabaseBackend). The test
process itself selects the dispatcher with the ``django_tasks_dispatcher`` fixture."""

from tests.settings import *  # noqa: F403

CHRONO_FORGE = {
    **CHRONO_FORGE,  # noqa: F405
    "DISPATCHER": "chrono_forge.dispatch.django_tasks.DjangoTasksDispatcher",
    "TASKS_BACKEND": "default",
}
