"""Plain django-q2 task functions that end-to-end tests enqueue to a real qcluster."""

from pathlib import Path


def touch(path, content="done"):
    """Write ``content`` to ``path`` atomically, so a poller never reads a half-written file."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(content)
    tmp.replace(target)
    return str(target)
