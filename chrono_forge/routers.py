"""Keep chrono_forge's tables on their own database.

    DATABASES = {"default": {...}, "workflows": {...}}
    CHRONO_FORGE = {"DATABASE": "workflows"}
    DATABASE_ROUTERS = ["chrono_forge.routers.ChronoForgeRouter"]

    python manage.py migrate --database=workflows    # creates chrono_forge's tables there only

chrono_forge's own managers already send every query to ``CHRONO_FORGE["DATABASE"]``; the router
does the same for everything else (``save()``, the admin, related managers, migrations). Other apps
are left to the next router. To keep enqueues transactional, put the django-q2 ORM broker on the
same alias (``Q_CLUSTER["orm"]``) and migrate ``django_q`` there too; otherwise chrono_forge
enqueues on commit (system check ``chrono_forge.W003``).
"""

from __future__ import annotations

from typing import Any

from . import conf

APP_LABEL = "chrono_forge"


def _ours(model_or_obj: Any) -> bool:
    return model_or_obj._meta.app_label == APP_LABEL


class ChronoForgeRouter:
    def db_for_read(self, model, **hints: Any) -> str | None:
        return conf.database() if _ours(model) else None

    def db_for_write(self, model, **hints: Any) -> str | None:
        return conf.database() if _ours(model) else None

    def allow_relation(self, obj1, obj2, **hints: Any) -> bool | None:
        if _ours(obj1) and _ours(obj2):
            return True
        return None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if app_label == APP_LABEL:
            return db == conf.database()
        return None
