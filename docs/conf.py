"""Sphinx configuration of the chrono_forge documentation site (built by scripts/docs).

The pages are MyST Markdown; the API reference is autodoc over chrono_forge's public modules,
which import Django models, so Django is configured here with settings that need no database:
nothing in the build connects to one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.admin",
            "django_q",
            "chrono_forge",
        ],
        # Never opened: autodoc only imports modules, and the build runs no query.
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        Q_CLUSTER={"name": "docs", "orm": "default", "timeout": 300, "retry": 600},
        USE_TZ=True,
    )
django.setup()

import chrono_forge  # noqa: E402  (after django.setup(): the package imports models lazily)

project = "chrono_forge"
author = "chrono_forge contributors"
copyright = "2026, chrono_forge contributors"
release = chrono_forge.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "screenshots/*.tmp.png"]
# Pages include README/docs sections under their own title, so an included "###" may follow the
# page's "#"; and a few shell snippets name lexers Pygments lacks (they render as plain text).
# A new docs/*.md that no toctree lists yet still builds (it is reachable from the pages that link
# to it) instead of failing the build for everyone: add it to index.md's toctrees.
suppress_warnings = ["myst.header", "misc.highlighting_failure", "toc.not_included"]

myst_enable_extensions = ["colon_fence", "deflist"]
# "#settings"-style links in the pages resolve to their headings.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"chrono_forge {release}"
