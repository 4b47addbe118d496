"""Workflow, ExecutionLog, ErrorLog and Message.

Writes go through ``QuerySet.update()`` with explicit columns, so each statement touches only what
it must (``save()`` would rewrite the JSON columns). Timestamps come from :mod:`chrono_forge.clock`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from django.db import models
from django.db.models import Case, F, Q, Value, When
from model_utils import Choices
from model_utils.fields import StatusField
from model_utils.models import TimeStampedModel

from . import clock, conf, dispatch, registry
from .exceptions import NotExecutableError
from .indexes import RowidTableIndex
from .lookups import Prefix
from .step_names import KindPrefix

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

    def cancellable(self):
        """Rows ``cancel`` stops: every state but completed and cancelled."""
        return self.filter(state__in=Workflow.CANCELLABLE_STATES)

    def cancel(self, reason: str = "") -> int:
        """Cancel every unfinished row of this queryset and, recursively, their branch children
        (and theirs); returns how many rows were cancelled.

        Rows go in keyset batches of ``CANCEL_BATCH_SIZE`` primary keys: per batch one SELECT of
        the ids, one conditional UPDATE (only rows still unfinished; a row that finished meanwhile
        keeps its state) and one SELECT of the batch's children, so memory stays flat and the
        statements per batch do not grow with the branch. An idle, scheduled, parked, failed or
        stalled row is cancelled at once (its pending delivery finds nothing to run); a running
        row keeps its lock, and its pass stops before its next step body and releases the lock
        without touching the state. Children get the reason ``parent cancelled: <reason>``. A row
        whose class defines ``on_cancel`` is scheduled for that hook in the same UPDATE, and the
        hooks of a batch are enqueued in one bulk enqueue (see :mod:`chrono_forge.on_cancel`;
        the engine's :mod:`chrono_forge.cancellation` does the work).

        Args:
            reason: why (a str of at most 255 characters), stored in ``cancel_reason``.

        Example::

            Workflow.objects.filter(job_class="shop.workflows.Order", key__startswith="o-").cancel(
                "shop closed"
            )
        """
        from .cancellation import cancel_queryset  # here: cancellation imports the models

        return cancel_queryset(self, reason)

    def past_deadline(self, now: datetime | None = None):
        """Unfinished rows (every state ``cancel`` stops) whose ``deadline_at`` is at or before
        ``now`` (default: the clock's now): what :meth:`cancel_past_deadline` cancels."""
        return self.cancellable().filter(deadline_at__lte=now or clock.now())

    def cancel_past_deadline(self) -> int:
        """Cancel every :meth:`past_deadline` row of this queryset with the reason ``deadline
        exceeded`` and a ``DeadlineExceeded`` in ErrorLog (its branch children, recursively, as
        ``cancel`` does); returns how many rows of this queryset were cancelled. The overdue sweep
        (``resume-overdue``) runs it, so a run parked on an event or waiting on a merge is
        cancelled within one sweep of its deadline.

        Example::

            Workflow.objects.cancel_past_deadline()
        """
        from .deadlines import cancel_past_deadline  # here: deadlines imports the models

        return cancel_past_deadline(self, clock.now())

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
        operator retry; a cancelled row's pending on_cancel hook or forced retry; and
        :meth:`unaccounted` rows. ``resume_overdue`` re-delivers just these."""
        cutoff = clock.now() - _grace(grace)
        # A cancelled row has a due time only while its on_cancel hook or a forced retry
        # (resume_cancelled) is pending.
        due = Q(next_run_at__lt=cutoff) & Q(
            state__in=(Workflow.STATE.idle, *Workflow.RETRYABLE_STATES, Workflow.STATE.cancelled)
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
        internal: dict[str, Any] = {}
        if stale_after is not None:
            internal["stale_after"] = conf.as_timedelta(stale_after).total_seconds()

        def enqueue_page(page: list[Workflow]) -> int:
            # One bulk enqueue per page (django-q2's ORM broker: one INSERT of every OrmQ row).
            # A crash mid-batch leaves the rest running under a stale lock: the next sweep
            # reaps them.
            dispatch.enqueue_many([(row.job_class, row.key) for row in page], **internal)
            return len(page)

        return self._requeue_pages(self.stranded(stale_after), enqueue_page)

    def resume_overdue(self, grace: timedelta | None = None) -> int:
        """Re-deliver every :meth:`overdue` row: a late delivery carries the row's token, so if
        the original one does arrive, only one of them runs; a late operator retry is re-sent as a
        retry; an unaccounted row gets a wake-up (a due time, then a delivery). A row whose class
        is not registered is re-delivered too: the worker stalls it with the reason.

        One bulk enqueue per page of rows (django-q2's ORM broker: one INSERT of every OrmQ row).
        A page the broker refuses keeps its due times: the next sweep re-delivers it."""
        from . import on_cancel  # here: on_cancel imports the models

        def redelivery(row: Workflow, due_at: datetime) -> tuple[str, str, dict[str, Any]]:
            internal: dict[str, Any] = {"token": dispatch.token_for(due_at)}
            if row.state in Workflow.RETRYABLE_STATES:
                internal["retry_workflow"] = True
            elif row.state == Workflow.STATE.cancelled and not on_cancel.pending(row):
                # A cancelled row's due time is its on_cancel hook's (a plain delivery runs it)
                # or, with no hook pending, a forced retry's.
                internal.update(retry_workflow=True, resume_cancelled=True)
            return row.job_class, row.key, internal

        def enqueue_page(page: list[Workflow]) -> int:
            due = [redelivery(row, row.next_run_at) for row in page if row.next_run_at is not None]
            dispatch.enqueue_many(due)  # overdue: due in the past, so delivered now
            count = len(due)
            for row in page:
                if row.next_run_at is None:  # unaccounted (rare): a due time, then a delivery
                    try:
                        row.wake()
                    except Exception:
                        logger.exception(
                            "chrono_forge: could not wake %s(%s); skipped", row.job_class, row.key
                        )
                        continue
                    count += 1
            return count

        return self._requeue_pages(self.overdue(grace), enqueue_page)

    def _requeue_pages(self, queryset, enqueue_page) -> int:
        # Pages by primary key, not one open cursor: an enqueue may close the connection
        # (django-q2's ORM broker does with CONN_MAX_AGE=0), which kills a cursor held across it.
        count, last = 0, None
        rows = queryset.only("id", "job_class", "key", "state", "next_run_at", "parked_on")
        rows = rows.order_by("pk")
        while page := list((rows if last is None else rows.filter(pk__gt=last))[:500]):
            last = page[-1].pk
            try:  # one page failing (a broker error) must not stop the sweep
                count += enqueue_page(page)
            except Exception:
                logger.exception(
                    "chrono_forge: could not re-enqueue %d workflow(s); skipped", len(page)
                )
        return count


def _grace(grace: timedelta | float | None) -> timedelta:
    return conf.as_timedelta(grace if grace is not None else conf.get("RESUME_OVERDUE_GRACE"))


class WorkflowManager(ChronoForgeManager.from_queryset(WorkflowQuerySet)):  # type: ignore[misc]
    pass


class Workflow(TimeStampedModel):
    """One run of a workflow class, unique on ``(job_class, key)``."""

    id = conf.primary_key_field()

    STATE = Choices("idle", "running", "completed", "failed", "stalled", "cancelled")
    RETRYABLE_STATES = ("failed", "stalled")
    EXECUTABLE_STATES = ("idle", "running")
    #: What ``cancel`` stops: every state but the two finished ones (completed, cancelled).
    CANCELLABLE_STATES = ("idle", "running", "failed", "stalled")
    FINISHED_STATES = ("completed", "cancelled")

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
    cancelled_at = models.DateTimeField(
        null=True, blank=True, help_text="When the run was cancelled (None: not cancelled)."
    )
    cancel_reason = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="Why the run was cancelled, as given to ``cancel(reason=...)``.",
    )
    deadline_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the run is cancelled if it is still unfinished (its deadline, counted "
        "from the first pass, or its parent's; None: no deadline).",
    )
    wake_requested = models.BooleanField(
        default=False,
        help_text="An external wake-up (perform_later, resume) arrived while a pass held the lock; "
        "that pass publishes an immediate continuation when it releases.",
    )
    result = models.JSONField(
        null=True,
        blank=True,
        help_text="The value perform() returned, stored with the completion (None until the run "
        "completes). Read it with Cls.result(key), which refuses an unfinished run.",
    )
    parent_execution_log = models.ForeignKey(
        "ExecutionLog",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="child_workflows",
        help_text="The branch step that spawned this workflow.",
        # No index of its own: chrono_forge_wf_parent_state (parent_execution_log, state, id)
        # leads with this column and serves every lookup of a branch's children.
        db_index=False,
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
            # ``id`` last: the children of a branch in one state, in primary-key order, are one
            # index range, so branch_results pages through 100k children without sorting them.
            models.Index(
                fields=["parent_execution_log", "state", "id"],
                name="chrono_forge_wf_parent_state",
            ),
            # Key search is a prefix: varchar_pattern_ops lets PostgreSQL serve LIKE 'abc%' under
            # any collation (elsewhere the option is ignored and it is a plain index).
            models.Index(
                fields=["key"], opclasses=["varchar_pattern_ops"], name="chrono_forge_wf_key_prefix"
            ),
            models.Index(fields=["state", "next_run_at"], name="chrono_forge_wf_state_next"),
            # The list sorted by next run (the admin's "next run" column).
            models.Index(fields=["next_run_at", "id"], name="chrono_forge_wf_next_run"),
            # The deadline sweep: unfinished rows past their deadline_at, a range per state. Rows
            # without a deadline (most) are not in it, so it costs their writes nothing.
            models.Index(
                fields=["state", "deadline_at"],
                name="chrono_forge_wf_deadline",
                condition=Q(deadline_at__isnull=False),
            ),
        ]
        permissions = [
            ("retry_workflow", "Can retry failed or stalled workflows"),
            ("resume_workflow", "Can resume idle workflows"),
            ("reap_workflow", "Can reap stranded workflows"),
            ("force_unlock_workflow", "Can force-unlock running workflows"),
            ("bulk_retry_workflows", "Can retry all blocked workflows at once"),
            ("cancel_workflow", "Can cancel workflows (and their branch children)"),
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
        return registry.resolve(self.job_class)

    def retry_now(self, *, resume_cancelled: bool = False) -> Workflow:
        """Retry a failed/stalled workflow now (one pass inline); a cancelled one only with
        ``resume_cancelled=True`` (see ``DurableWorkflow.retry_later``)."""
        return self.workflow_class().retry_now(self.key, resume_cancelled=resume_cancelled)

    def retry_later(self, *, resume_cancelled: bool = False) -> Workflow:
        """Retry a failed/stalled workflow through the queue; a cancelled one only with
        ``resume_cancelled=True`` (see ``DurableWorkflow.retry_later``)."""
        return self.workflow_class().retry_later(self.key, resume_cancelled=resume_cancelled)

    def resume(self) -> Workflow:
        """Re-enqueue an idle workflow (e.g. a ``continue_if`` whose event arrived)."""
        if self.state != self.STATE.idle:
            raise NotExecutableError(
                f"{self}: only idle workflows can be resumed (state is {self.state})"
            )
        self.workflow_class()  # refuse a class that is not registered before enqueuing
        self.wake()
        return self

    def send(self, topic: str, payload: Any, *, idempotency_key: str | None = None) -> Message:
        """Deliver a message to this run; see :meth:`DurableWorkflow.send
        <chrono_forge.workflow.DurableWorkflow.send>` (same arguments and errors).

        Example::

            Workflow.objects.get(job_class=..., key="order-123").send("payment", {"amount": 5})
        """
        from .messages import send  # here: messages imports the models

        return send(
            self.workflow_class(), self.key, topic, payload, idempotency_key=idempotency_key
        )

    def cancel(self, reason: str = "") -> Workflow:
        """Cancel this run and its branch children (recursively); see
        :meth:`WorkflowQuerySet.cancel`. Returns the row, read again.

        Args:
            reason: why (a str of at most 255 characters), shown in the admin and ``show``.

        Raises:
            WorkflowNotCancellableError: the run already finished (``error.state`` says how).

        Example::

            Workflow.objects.get(key="order-1").cancel("refunded by hand")
        """
        from .cancellation import cancel_one  # here: cancellation imports the models

        cancel_one(self, reason)
        return self

    def wake(self) -> None:
        """Deliver an external wake-up (``perform_later`` of an existing key, ``resume``, the
        merge poller's all-done): record it on the row, then enqueue a pass.

        An idle row gets a due time (``next_run_at = now``, unless an earlier one is set), so the
        overdue sweep re-delivers it if the queue loses this delivery; a running row gets
        ``wake_requested``, which its holder turns into a continuation when it releases. Both in
        one UPDATE, in the transaction of the enqueue (committed before it, with a broker outside
        the database). Terminal rows are left alone (the delivery finds nothing to run)."""
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

    # No index of its own: the unique chrono_forge_log_wf_step (workflow, step_name) leads with
    # this column and serves the logs of a workflow, the delete of a workflow's logs and
    # PostgreSQL's check of the foreign key when a workflow row is deleted.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="execution_logs", db_index=False
    )
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
        # The admin's name for these rows everywhere (tabs, titles, breadcrumbs, the index).
        verbose_name = "step"
        verbose_name_plural = "steps"
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
            # Pending waits (the Waiting page, the wait filters) and the Steps list by state. The
            # workflow last: the pending waits' workflows are read from the index alone (with
            # (state, step_name) only, SQLite fetched every pending wait's row for its workflow).
            models.Index(
                fields=["state", "step_name", "workflow"],
                opclasses=["varchar_pattern_ops", "varchar_pattern_ops", conf.key_opclass()],
                name="chrono_forge_log_state_step",
            ),
            # The Steps list of one kind, newest first: a range of (kind, id), read backwards.
            models.Index(KindPrefix("step_name"), "id", name="chrono_forge_log_kind"),
            # The Steps list sorted by when a step started or completed.
            models.Index(fields=["started_at"], name="chrono_forge_log_started"),
            models.Index(fields=["completed_at"], name="chrono_forge_log_completed"),
            # The ids alone, in order: a deep page of the Steps list (?p=N, newest first) is an
            # OFFSET walk over the ids before it. On SQLite the primary key is the table itself,
            # every column of every row, so the walk read the table up to the offset (half-way
            # down 4.5M step logs: 0.2 s from the page cache, 1.7 s from disk); this index holds
            # only the ids (30 ms). Created on SQLite with an integer key only: PostgreSQL's
            # primary-key index (and SQLite's index of a UUID key) already is the ids alone, and
            # a copy would be one more entry written by every step (see RowidTableIndex).
            RowidTableIndex(fields=["id"], name="chrono_forge_log_id"),
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

    # Its own index stays: no other index of this table leads with the workflow.
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
        verbose_name = "error"
        verbose_name_plural = "errors"
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
    cast(models.Field, _model._meta.get_field(_column)).register_lookup(Prefix)  # not a relation


class MessageQuerySet(ChronoForgeQuerySet):
    def pending(self):
        """Messages no ``receive`` consumed yet (``consumed_at`` is the mark: it stays even if the
        consuming step's log is deleted)."""
        return self.filter(consumed_at__isnull=True)

    def consumed(self):
        return self.filter(consumed_at__isnull=False)

    def next_for(self, workflow_id: Any, topic: str):
        """The oldest pending message of ``topic`` for one workflow (FIFO: arrival order, which
        is commit order, as a send locks the workflow row before it inserts). Auto-increment keys
        grow in that order; random UUID keys do not, so with those the order is the send time
        (read under that lock), then the key."""
        pending = self.pending().filter(workflow_id=workflow_id, topic=topic)
        if isinstance(self.model._meta.pk, models.UUIDField):
            return pending.order_by("created", "pk")
        return pending.order_by("pk")


class Message(models.Model):
    """A payload sent to one workflow run under a topic, consumed once by a ``receive`` step."""

    id = conf.primary_key_field()

    # No index of its own: chrono_forge_msg_topic (workflow, topic, id) and the unique
    # chrono_forge_msg_idempotency (workflow, idempotency_key) lead with this column.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    topic = models.CharField(max_length=255)
    payload = models.JSONField(null=True, blank=True)
    # None, not "": most messages have no key, and the per-workflow unique constraint must not
    # treat every keyless message as a duplicate of the first.
    idempotency_key = models.CharField(  # noqa: DJ001
        max_length=255,
        null=True,
        blank=True,
        help_text="Unique per workflow: a second send with the same key returns this message.",
    )
    created = models.DateTimeField()
    consumed_by = models.ForeignKey(
        ExecutionLog,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="consumed_messages",
        help_text="The receive step that consumed this message.",
        # No database constraint, like Workflow.parent_execution_log: PostgreSQL would check it
        # at COMMIT once per deleted step log. Cleanup deletes a workflow's messages before its
        # step logs, and the ORM's SET_NULL covers other deletes (``consumed_at`` stays).
        db_constraint=False,
    )
    consumed_at = models.DateTimeField(
        null=True, blank=True, help_text="When a receive consumed it (None: pending)."
    )

    objects = ChronoForgeManager.from_queryset(MessageQuerySet)()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"], name="chrono_forge_msg_idempotency"
            ),
        ]
        indexes = [
            models.Index(fields=["workflow", "topic", "id"], name="chrono_forge_msg_topic"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} #{self.pk}"

    @property
    def pending(self) -> bool:
        return self.consumed_at is None
