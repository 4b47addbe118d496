"""``tests.settings`` without ``django.contrib.admin``: the ``chrono_forge`` command must work in a
project that does not install the admin (it renders the admin's page models, which live outside
``chrono_forge.admin``). This module is its own URLconf: no URL."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "django.contrib.admin"]  # noqa: F405
ROOT_URLCONF = "tests.settings_no_admin"
urlpatterns: list = []
