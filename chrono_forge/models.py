"""Workflow, ExecutionLog and ErrorLog.

Writes go through ``QuerySet.update()`` with explicit columns, so each statement touches only what it
must (``save()`` would rewrite the JSON columns). Timestamps come from :mod:`chrono_forge.clock`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import models
from model_utils import Choices
from model_utils.fields import StatusField
from model_utils.models import TimeStampedModel

from . import clock, conf

logger = logging.getLogger("chrono_forge")

if TYPE_CHECKING:  # pragma: no cover
    from .workflow import DurableWorkflow


class ChronoForgeQuerySet(models.QuerySet):
    pass


class ChronoForgeManager(models.Manager):
    """Every query of chrono_forge goes to the ``CHRONO_FORGE["DATABASE"]`` alias."""

    def get_queryset(self):
        return super().get_queryset().using(conf.database())


class WorkflowQuerySet(ChronoForgeQuerySet):
    def retryable(self):
        return self.filter(state__in=Workflow.RETRYABLE_STATES)

    def blocked(self):
        return self.filter(state__in=(Workflow.STATE.failed, Workflow.STATE.stalled))

    def in_flight(self):
        return self.filter(state__in=(Workflow.STATE.idle, Workflow.STATE.running))

    def stranded(self, stale_after: timedelta | None = None):
        """Running rows whose lock is older than ``stale_after`` (default REAP_STALE_AFTER)."""
        stale_after = (
            conf.as_timedelta(stale_after) if stale_after is not None else conf.reap_stale_after()
        )
        cutoff = clock.now() - stale_after
        return self.filter(
            state=Workflow.STATE.running, locked_at__isnull=False, locked_at__lt=cutoff
        )

    def overdue(self, grace: timedelta | None = None):
        """Idle rows whose scheduled continuation is past due by more than ``grace``."""
        grace = conf.as_timedelta(grace if grace is not None else conf.get("RESUME_OVERDUE_GRACE"))
        return self.filter(state=Workflow.STATE.idle, next_run_at__lt=clock.now() - grace)

    def reap_stalled(self, stale_after: timedelta | None = None) -> int:
        """Re-enqueue running rows whose lock is older than ``stale_after`` (default REAP_STALE_AFTER);
        the pass steals the stale lock. A row whose class is not registered is re-enqueued too: the
        worker stalls it with the reason. Returns how many were re-enqueued."""
        from .dispatch import enqueue

        return self._requeue(
            self.stranded(stale_after), lambda row: enqueue(row.job_class, row.key)
        )

    def resume_overdue(self, grace: timedelta | None = None) -> int:
        """Re-enqueue idle rows whose continuation is overdue (lost by the broker). The delivery carries
        the row's token, so if the original continuation does arrive, only one of them runs. A row
        whose class is not registered is re-enqueued too: the worker stalls it with the reason."""
        from .dispatch import enqueue
        from .executor import token_for

        return self._requeue(
            self.overdue(grace),
            lambda row: enqueue(
                row.job_class, row.key, run_at=row.next_run_at, token=token_for(row.next_run_at)
            ),
        )

    def _requeue(self, queryset, enqueue_one) -> int:
        # Pages by primary key, not one open cursor: an enqueue may close the connection (django-q2's
        # ORM broker does with CONN_MAX_AGE=0), which would kill a cursor held across it.
        count, last = 0, None
        rows = queryset.only("id", "job_class", "key", "next_run_at").order_by("pk")
        while page := list((rows if last is None else rows.filter(pk__gt=last))[:500]):
            last = page[-1].pk
            for row in page:
                try:  # no class check here: the worker that gets the delivery decides
                    enqueue_one(row)
                except Exception:
                    logger.exception(
                        "chrono_forge: could not re-enqueue %s(%s); skipped", row.job_class, row.key
                    )
                    continue
                count += 1
        return count


class WorkflowManager(ChronoForgeManager.from_queryset(WorkflowQuerySet)):  # type: ignore[misc]
    pass


class Workflow(TimeStampedModel):
    """One run of a workflow class, unique on ``(job_class, key)``."""

    id = conf.primary_key_field()

    STATE = Choices("idle", "running", "completed", "failed", "stalled")
    RETRYABLE_STATES = ("failed", "stalled")
    EXECUTABLE_STATES = ("idle", "running")

    job_class = models.CharField(
        max_length=255, help_text="Dotted import path of the workflow class."
    )
    key = models.CharField(max_length=255)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    state = StatusField(choices_name="STATE", max_length=16)
    locked_by = models.CharField(max_length=64, null=True, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    next_run_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the scheduled continuation is due (None: nothing scheduled).",
    )
    wake_requested = models.BooleanField(
        default=False,
        help_text="An external wake-up (perform_later, resume) arrived while a pass held the lock; "
        "that pass publishes an immediate continuation when it releases.",
    )
    parent_execution_log = models.ForeignKey(
        "ExecutionLog",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="child_workflows",
        help_text="The branch step that spawned this workflow.",
    )

    objects = WorkflowManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job_class", "key"], name="chrono_forge_workflow_class_key"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "completed_at"], name="chrono_forge_wf_state_done"),
            models.Index(
                fields=["parent_execution_log", "state"], name="chrono_forge_wf_parent_state"
            ),
            models.Index(fields=["key"], name="chrono_forge_wf_key"),
            models.Index(fields=["state", "next_run_at"], name="chrono_forge_wf_state_next"),
        ]
        permissions = [
            ("retry_workflow", "Can retry failed or stalled workflows"),
            ("resume_workflow", "Can resume idle workflows"),
            ("reap_workflow", "Can reap stranded workflows"),
            ("force_unlock_workflow", "Can force-unlock running workflows"),
            ("bulk_retry_workflows", "Can retry all blocked workflows at once"),
        ]

    def __str__(self) -> str:
        return f"{self.job_class.rsplit('.', 1)[-1]}({self.key})"

    # ---------------------------------------------------------------------------------------
    @property
    def retryable(self) -> bool:
        return self.state in self.RETRYABLE_STATES

    def workflow_class(self) -> type[DurableWorkflow]:
        """The registered class of this row (never imported on demand); raises
        :class:`~chrono_forge.exceptions.UnregisteredWorkflowClass` saying why it may be missing."""
        from . import registry

        return registry.resolve(self.job_class)

    def retry_now(self) -> Workflow:
        """Retry a failed/stalled workflow now (one pass inline)."""
        return self.workflow_class().retry_now(self.key)

    def retry_later(self) -> Workflow:
        """Retry a failed/stalled workflow through the queue."""
        return self.workflow_class().retry_later(self.key)

    def resume(self) -> Workflow:
        """Re-enqueue an idle workflow (e.g. a ``continue_if`` whose event arrived)."""
        from .exceptions import NotExecutableError
        from . import dispatch

        if self.state != self.STATE.idle:
            raise NotExecutableError(
                f"{self}: only idle workflows can be resumed (state is {self.state})"
            )
        self.workflow_class()  # refuse a class that is not registered before enqueuing
        dispatch.enqueue(self.job_class, self.key)
        return self

    def force_unlock(self) -> Workflow:
        """Clear the lock and set the row idle, whoever holds it. Nothing is scheduled afterwards and a
        still-running pass may run steps twice: prefer ``reap_stalled``."""
        now = clock.now()
        Workflow.objects.filter(pk=self.pk, state=self.STATE.running).update(
            locked_by=None, locked_at=None, state=self.STATE.idle, modified=now
        )
        self.refresh_from_db(fields=["locked_by", "locked_at", "state", "modified"])
        return self


class ExecutionLog(TimeStampedModel):
    """One durable step of a workflow (``<kind>$<name>``), unique per workflow."""

    id = conf.primary_key_field()

    STATE = Choices("pending", "completed", "failed")

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="execution_logs")
    step_name = models.CharField(max_length=255)
    state = StatusField(choices_name="STATE", max_length=16)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    last_executed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    error_class = models.CharField(max_length=255, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    objects = ChronoForgeManager.from_queryset(ChronoForgeQuerySet)()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "step_name"], name="chrono_forge_log_wf_step"
            ),
        ]

    def __str__(self) -> str:
        return self.step_name

    @property
    def kind(self) -> str:
        """The prefix before the first ``$`` (empty for lifecycle markers)."""
        return self.step_name.split("$", 1)[0]


class ErrorLog(TimeStampedModel):
    """One error raised inside a workflow, with a snapshot of its context."""

    id = conf.primary_key_field()

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="error_logs")
    step_name = models.CharField(max_length=255, null=True, blank=True)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    error_class = models.CharField(max_length=255)
    error_message = models.TextField(blank=True, default="")
    backtrace = models.TextField(blank=True, default="")
    context = models.JSONField(default=dict, blank=True)

    objects = ChronoForgeManager.from_queryset(ChronoForgeQuerySet)()

    class Meta:
        indexes = [models.Index(fields=["error_class"], name="chrono_forge_err_class")]

    def __str__(self) -> str:
        return f"{self.error_class}: {self.error_message[:80]}"
