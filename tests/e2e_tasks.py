"""Plain django-q2 task functions that end-to-end tests enqueue to a real qcluster."""

from pathlib import Path

from chrono_forge.dispatch.django_q import DjangoQDispatcher


def touch(path, content="done"):
    """Write ``content`` to ``path`` atomically, so a poller never reads a half-written file."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(content)
    tmp.replace(target)
    return str(target)


class SavingDjangoQDispatcher(DjangoQDispatcher):
    """The django-q2 dispatcher keeping django-q2's result row for every pass (passes are sent with
    ``save=False`` by default), so an end-to-end test can count the deliveries of each workflow."""

    save_results = True
