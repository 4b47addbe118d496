"""Worker liveness and the backlog, in one snapshot: ``manage.py chrono_forge status`` prints it
(and exits 1 when work is overdue and no cluster is alive) and the admin's Overview shows it.

Clusters come from django-q2's own cluster stats (``django_q.status.Stat``): every running qcluster
saves its status every ``guard_cycle`` (0.5 s) with a 3-second expiry, in its broker (Redis) or,
for the ORM broker, in the Django cache ``Q_CLUSTER["cache"]`` (default ``"default"``). A cache
that lives inside each process (``LocMemCache``, ``DummyCache``) cannot show another process's
clusters: the snapshot then says that the clusters are unknown, and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Min
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.status import Stat

from . import clock, conf
from .dispatch.django_q import uses_orm_broker
from .models import Workflow

#: Counts are exact up to this many rows (``COUNT`` over a ``LIMIT`` subquery), "5000+" beyond.
COUNT_CAP = 5000
#: Cache backends whose contents other processes cannot see.
PROCESS_LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)
#: django-q2 statuses of a cluster that takes work.
ALIVE_STATUSES = ("Starting", "Idle", "Working")


@dataclass
class Cluster:
    """One qcluster as its last saved stat shows it."""

    id: str
    host: str
    pid: int
    status: str
    workers: int
    uptime: float | None  # seconds

    @property
    def alive(self) -> bool:
        return self.status in ALIVE_STATUSES


@dataclass
class Health:
    checked_at: datetime
    clusters: list[Cluster] | None  # None: they cannot be seen from here (``clusters_note``)
    clusters_note: str = ""
    queue_depth: int | None = None  # tasks ready in the passes' queue; None: unknown
    queue_note: str = ""
    oldest_due: datetime | None = None  # the oldest delivery that is due and has not started
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def alive(self) -> int | None:
        """Live clusters, or None when they cannot be seen."""
        return None if self.clusters is None else sum(c.alive for c in self.clusters)

    @property
    def overdue(self) -> int:
        return self.counts.get("overdue", 0)

    @property
    def unhealthy(self) -> bool:
        """Work is overdue and no live cluster can be seen: nothing will run it."""
        return self.overdue > 0 and not self.alive

    def show(self, name: str) -> str:
        count = self.counts[name]
        return f"{COUNT_CAP}+" if count > COUNT_CAP else str(count)


def _capped(queryset) -> int:
    return queryset.order_by()[: COUNT_CAP + 1].count()


def _stats_cache_problem() -> str:
    """Why the ORM broker's cluster stats cannot be read from this process ("" when they can)."""
    alias = Conf.CACHE
    backend = (getattr(settings, "CACHES", {}).get(alias) or {}).get("BACKEND", "")
    if not backend:
        return f"django-q2's cache {alias!r} is not in CACHES"
    if backend in PROCESS_LOCAL_CACHES:
        return (
            f"django-q2 keeps cluster stats in the cache {alias!r} ({backend.rsplit('.', 1)[-1]}), "
            "which each process keeps to itself; point Q_CLUSTER['cache'] at a cache every process "
            "shares (Redis, Memcached, DatabaseCache, or FileBasedCache on one machine)"
        )
    return ""


def clusters() -> tuple[list[Cluster] | None, str]:
    """The clusters of this site (``Q_CLUSTER["name"]``), or None and why they are unknown."""
    try:
        if uses_orm_broker():
            problem = _stats_cache_problem()
            if problem:
                return None, problem
            broker = Broker()  # the stats live in the cache: no queue connection needed
        else:
            broker = get_broker()
        stats = Stat.get_all(broker=broker)
    except Exception as error:  # a broker or cache that is down is itself the finding
        return None, f"cluster stats unreadable: {type(error).__name__}: {error}"
    now = clock.now()
    found = [
        Cluster(
            id=str(getattr(stat, "cluster_id", "")),
            host=str(getattr(stat, "host", "")),
            pid=int(getattr(stat, "pid", 0) or 0),
            status=str(getattr(stat, "status", "")),
            workers=len(getattr(stat, "workers", []) or []),
            uptime=(now - stat.tob).total_seconds() if getattr(stat, "tob", None) else None,
        )
        for stat in stats
    ]
    return sorted(found, key=lambda c: (c.host, c.pid)), ""


def queue_depth() -> tuple[int | None, str]:
    """Tasks ready to run in the queue of workflow passes (``CHRONO_FORGE["CLUSTER"]``)."""
    queue = conf.get("CLUSTER") or Conf.CLUSTER_NAME
    try:
        if uses_orm_broker():
            # The broker's own queue_size(), without building a broker (it closes connections).
            ready = OrmQ.objects.using(Conf.ORM).filter(key=queue, lock__lte=clock.now())
            return _capped(ready), ""
        return int(get_broker(queue).queue_size()), ""
    except Exception as error:
        return None, f"queue unreadable: {type(error).__name__}: {error}"


def snapshot() -> Health:
    """Everything ``status`` and the Overview show: clusters, queue depth, the oldest due delivery
    and the counts of running / stranded / overdue / parked / blocked workflows."""
    now = clock.now()
    found, clusters_note = clusters()
    depth, queue_note = queue_depth()
    waiting = (Workflow.STATE.idle, *Workflow.RETRYABLE_STATES)  # a blocked row's pending retry
    oldest = Workflow.objects.filter(state__in=waiting, next_run_at__lte=now).aggregate(
        oldest=Min("next_run_at")
    )["oldest"]
    counts = {
        "running": _capped(Workflow.objects.filter(state=Workflow.STATE.running)),
        "stranded": _capped(Workflow.objects.stranded()),
        "overdue": _capped(Workflow.objects.overdue()),
        "parked": _capped(Workflow.objects.parked()),
        "blocked": _capped(Workflow.objects.blocked()),
    }
    return Health(
        checked_at=now,
        clusters=found,
        clusters_note=clusters_note,
        queue_depth=depth,
        queue_note=queue_note,
        oldest_due=oldest,
        counts=counts,
    )


def age(moment: datetime | None, now: datetime) -> timedelta | None:
    return None if moment is None else max(now - moment, timedelta(0))
