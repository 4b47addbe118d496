"""``tests.settings`` with UUID primary keys (``PRIMARY_KEY_FIELD``), for the test that runs part
of the suite in a project configured that way (tests/test_uuid_keys.py)."""

from tests.settings import *  # noqa: F403
from tests.settings import CHRONO_FORGE as _CHRONO_FORGE

CHRONO_FORGE = {**_CHRONO_FORGE, "PRIMARY_KEY_FIELD": "django.db.models.UUIDField"}
