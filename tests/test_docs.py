"""The documentation site builds with warnings as errors, from the suite as well as scripts/docs.

The site includes sections of README.md and docs/*.md by their headings and renders the docstrings
of the public modules, so a renamed heading or a docstring that is not valid reStructuredText breaks
it: this test lets the suite catch that before it reaches CI. It uses Sphinx's ``dummy`` builder
(every page read and resolved, no HTML written) to stay quick.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The build needs no database: it is the same on both passes of scripts/test.
pytestmark = pytest.mark.sqlite_only


def test_docs_build_without_warnings(tmp_path):
    # docs/conf.py configures Django itself; the suite's settings module must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "dummy",
            "-d",
            str(tmp_path / "doctrees"),
            "docs",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
