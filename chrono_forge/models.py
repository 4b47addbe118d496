"""Workflow, ExecutionLog and ErrorLog.

Writes go through ``QuerySet.update()`` with explicit columns, so each statement touches only what
it must (``save()`` would rewrite the JSON columns). Timestamps come from :mod:`chrono_forge.clock`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models import Case, F, Q, Value, When
from model_utils import Choices
from model_utils.fields import StatusField
from model_utils.models import TimeStampedModel

from . import clock, conf
from .lookups import Prefix

logger = logging.getLogger("chrono_forge")

if TYPE_CHECKING:  # pragma: no cover
    from .workflow import DurableWorkflow


class ChronoForgeQuerySet(models.QuerySet):
    def one(self):
        """The row of a lookup on a unique key, or None. Unlike ``first()`` there is no ``ORDER BY
        id``: with it PostgreSQL may walk the primary-key index, filtering millions of rows,
        instead of reading one entry of the unique index."""
        rows = list(self.order_by()[:1])
        return rows[0] if rows else None


class ChronoForgeManager(models.Manager):
    """Every query of chrono_forge goes to the ``CHRONO_FORGE["DATABASE"]`` alias."""

    def get_queryset(self):
        return super().get_queryset().using(conf.database())


class WorkflowQuerySet(ChronoForgeQuerySet):
    """The four states of an unfinished run (see the README, "Locking and delivery"): running
    (``stranded()`` when its lock is stale), scheduled (``scheduled()``, ``overdue()`` when late),
    parked on an event (``parked()``) and blocked (``blocked()``)."""

    def retryable(self):
        return self.filter(state__in=Workflow.RETRYABLE_STATES)

    def blocked(self):
        return self.filter(state__in=(Workflow.STATE.failed, Workflow.STATE.stalled))

    def in_flight(self):
        return self.filter(state__in=(Workflow.STATE.idle, Workflow.STATE.running))

    def scheduled(self):
        """Idle rows with a delivery due at ``next_run_at`` (a first pass, a continuation, a
        wake-up or a merge poll), late or not."""
        return self.filter(state=Workflow.STATE.idle, next_run_at__isnull=False)

    def never_started(self):
        """Idle rows whose first pass has not started yet."""
        return self.filter(state=Workflow.STATE.idle, started_at__isnull=True)

    def parked(self):
        """Idle rows parked on an event (``continue_if``) with nothing scheduled."""
        return self.filter(
            state=Workflow.STATE.idle, next_run_at__isnull=True, parked_on__isnull=False
        )

    def unaccounted(self, grace: timedelta | None = None):
        """Idle rows with nothing scheduled and not parked, untouched for ``grace``: a state the
        engine never leaves a row in (rows from older versions, a forced unlock, a bug)."""
        cutoff = clock.now() - _grace(grace)
        return self.filter(
            state=Workflow.STATE.idle,
            next_run_at__isnull=True,
            parked_on__isnull=True,
            modified__lt=cutoff,
        )

    def record_wake(self, now: datetime) -> int:
        """Record an external wake-up on idle and running rows, in one UPDATE: an idle row becomes
        due ``now`` (an earlier due time is kept), a running row gets ``wake_requested`` (its
        holder publishes a continuation when it releases)."""
        idle, running = Workflow.STATE.idle, Workflow.STATE.running
        due_later = Q(next_run_at__isnull=True) | Q(next_run_at__gt=now)
        return self.filter(state__in=(idle, running)).update(
            next_run_at=Case(
                When(Q(state=idle) & due_later, then=Value(now)), default=F("next_run_at")
            ),
            wake_requested=Case(When(state=running, then=Value(True)), default=F("wake_requested")),
        )

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
        """Rows whose delivery is late by more than ``grace`` (default RESUME_OVERDUE_GRACE): an
        idle row's first pass, continuation, wake-up or merge poll; a failed/stalled row's pending
        operator retry; and :meth:`unaccounted` rows. ``resume_overdue`` re-delivers just these."""
        cutoff = clock.now() - _grace(grace)
        due = Q(next_run_at__lt=cutoff) & Q(
            state__in=(Workflow.STATE.idle, *Workflow.RETRYABLE_STATES)
        )
        lost = Q(
            state=Workflow.STATE.idle,
            next_run_at__isnull=True,
            parked_on__isnull=True,
            modified__lt=cutoff,
        )
        return self.filter(due | lost)

    def reap_stalled(self, stale_after: timedelta | None = None) -> int:
        """Re-enqueue running rows whose lock is older than ``stale_after`` (default
        REAP_STALE_AFTER); the pass steals the stale lock, even one younger than MAX_DURATION when
        ``stale_after`` is shorter (the delivery carries the threshold). A row whose class is not
        registered is re-enqueued too: the worker stalls it with the reason. Returns how many were
        re-enqueued."""
        from .dispatch import enqueue

        internal = {}
        if stale_after is not None:
            internal["stale_after"] = conf.as_timedelta(stale_after).total_seconds()
        return self._requeue(
            self.stranded(stale_after), lambda row: enqueue(row.job_class, row.key, **internal)
        )

    def resume_overdue(self, grace: timedelta | None = None) -> int:
        """Re-deliver every :meth:`overdue` row: a late delivery carries the row's token, so if
        the original one does arrive, only one of them runs; a late operator retry is re-sent as a
        retry; an unaccounted row gets a wake-up (a due time, then a delivery). A row whose class
        is not registered is re-delivered too: the worker stalls it with the reason."""
        from .dispatch import enqueue
        from .executor import token_for

        def redeliver(row: Workflow) -> None:
            if row.next_run_at is None:
                row.wake()
                return
            internal: dict[str, Any] = {"token": token_for(row.next_run_at)}
            if row.state in Workflow.RETRYABLE_STATES:
                internal["retry_workflow"] = True
            enqueue(row.job_class, row.key, run_at=row.next_run_at, **internal)

        return self._requeue(self.overdue(grace), redeliver)

    def _requeue(self, queryset, enqueue_one) -> int:
        # Pages by primary key, not one open cursor: an enqueue may close the connection
        # (django-q2's ORM broker does with CONN_MAX_AGE=0), which kills a cursor held across it.
        count, last = 0, None
        rows = queryset.only("id", "job_class", "key", "state", "next_run_at").order_by("pk")
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


def _grace(grace: timedelta | float | None) -> timedelta:
    return conf.as_timedelta(grace if grace is not None else conf.get("RESUME_OVERDUE_GRACE"))


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
    # None, not "": the unlocked state is NULL, which the lock queries and the reaper filter on.
    locked_by = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    locked_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    next_run_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the scheduled continuation is due (None: nothing scheduled).",
    )
    parked_on = models.CharField(  # noqa: DJ001 (None = not parked, queried with __isnull)
        max_length=255,
        null=True,
        blank=True,
        help_text="The step (a continue_if) the run is parked on with nothing scheduled, waiting "
        "for an event (None: not parked).",
    )
    parked_since = models.DateTimeField(
        null=True, blank=True, help_text="Since when the run is parked on ``parked_on``."
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
        # No database constraint: PostgreSQL checks a deferred foreign key at COMMIT once per
        # deleted step log (whether a child points at it), which was most of cleanup's time
        # (250 of 290 s at 4.65 M rows). Every delete of step logs unlinks the children first
        # (the ORM's SET_NULL, cleanup's explicit UPDATE), so the link never dangles.
        db_constraint=False,
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
            # Key search is a prefix: varchar_pattern_ops lets PostgreSQL serve LIKE 'abc%' under
            # any collation (elsewhere the option is ignored and it is a plain index).
            models.Index(
                fields=["key"], opclasses=["varchar_pattern_ops"], name="chrono_forge_wf_key_prefix"
            ),
            models.Index(fields=["state", "next_run_at"], name="chrono_forge_wf_state_next"),
            # The list sorted by next run (the admin's "next run" column).
            models.Index(fields=["next_run_at", "id"], name="chrono_forge_wf_next_run"),
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

        if self.state != self.STATE.idle:
            raise NotExecutableError(
                f"{self}: only idle workflows can be resumed (state is {self.state})"
            )
        self.workflow_class()  # refuse a class that is not registered before enqueuing
        self.wake()
        return self

    def wake(self) -> None:
        """Deliver an external wake-up (``perform_later`` of an existing key, ``resume``, the
        merge poller's all-done): record it on the row, then enqueue a pass.

        An idle row gets a due time (``next_run_at = now``, unless an earlier one is set), so the
        overdue sweep re-delivers it if the queue loses this delivery; a running row gets
        ``wake_requested``, which its holder turns into a continuation when it releases. Both in
        one UPDATE, in the transaction of the enqueue (committed before it, with a broker outside
        the database). Terminal rows are left alone (the delivery finds nothing to run)."""
        from . import dispatch

        with dispatch.with_enqueue():
            if self.state in Workflow.EXECUTABLE_STATES:
                Workflow.objects.filter(pk=self.pk).record_wake(clock.now())
            dispatch.enqueue(self.job_class, self.key)

    def force_unlock(self) -> Workflow:
        """Clear the lock and set the row idle, whoever holds it. Nothing is delivered afterwards
        (resume it, or the overdue sweep re-delivers it after the grace) and a still-running pass
        may run steps twice: prefer ``reap_stalled``."""
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
        indexes = [
            # Kind filters and name search are prefixes of step_name across all workflows.
            models.Index(
                fields=["step_name"],
                opclasses=["varchar_pattern_ops"],
                name="chrono_forge_log_step_prefix",
            ),
            # Pending waits (the Waiting page, the wait filters) and the Steps list by state.
            models.Index(
                fields=["state", "step_name"],
                opclasses=["varchar_pattern_ops", "varchar_pattern_ops"],
                name="chrono_forge_log_state_step",
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
    # None: an error outside any step (a workflow-level one), distinct from a step named "".
    step_name = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    attempt = models.PositiveIntegerField(null=True, blank=True)
    error_class = models.CharField(max_length=255)
    error_message = models.TextField(blank=True, default="")
    backtrace = models.TextField(blank=True, default="")
    context = models.JSONField(default=dict, blank=True)

    objects = ChronoForgeManager.from_queryset(ChronoForgeQuerySet)()

    class Meta:
        indexes = [
            models.Index(fields=["error_class"], name="chrono_forge_err_class"),
            models.Index(
                fields=["step_name"],
                opclasses=["varchar_pattern_ops"],
                name="chrono_forge_err_step_prefix",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.error_class}: {self.error_message[:80]}"


# ``__prefix`` (see chrono_forge.lookups) on the columns searched by prefix.
for _model, _column in ((Workflow, "key"), (ExecutionLog, "step_name"), (ErrorLog, "step_name")):
    _model._meta.get_field(_column).register_lookup(Prefix)
