"""The README's example project runs as written: its workflow, its settings and its pytest test.

(The docs site's testing page adds a second test file to that project, checked the same way.)

Every fenced block of README.md whose first line is a comment naming a file
(``# orders/workflows.py``, ``# pytest.ini``, ``# tests/test_orders.py``) is written to that path in
a project made by ``django-admin startproject mysite``; the "Installing in your project" settings
block is appended to its settings; then pytest runs in that directory, in a subprocess, as a user
would run it. A README edit that breaks the example (a missing import, marker or setting) fails
here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The docs site's testing page adds a test of its own to the same project.
DOCS_TESTING = ROOT / "docs" / "testing.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
FILE_COMMENT = re.compile(r"^[#;] ([\w./-]+\.(?:py|ini|toml|cfg))\n")

# The new project always uses SQLite (startproject's default): the PostgreSQL pass adds nothing.
pytestmark = pytest.mark.sqlite_only


def example_files(text: str) -> dict[str, str]:
    """The README's fenced blocks that name their file, keyed by that path."""
    files = {}
    for _lang, body in FENCE.findall(text):
        named = FILE_COMMENT.match(body)
        if named:
            assert named.group(1) not in files, f"README names {named.group(1)} twice"
            files[named.group(1)] = body
    return files


def settings_block(text: str) -> str:
    """The settings block of "Installing in your project", runnable after startproject's own."""
    section = text.split("## Installing in your project", 1)[1].split("\n## ", 1)[0]
    block = next(body for _lang, body in FENCE.findall(section) if "INSTALLED_APPS" in body)
    # The README writes `[..., "django_q", "chrono_forge"]` for "your apps, then these".
    assert "[...," in block, "the README's INSTALLED_APPS line changed shape"
    return block.replace("[...,", "[*INSTALLED_APPS,")


def test_readme_names_the_example_files():
    files = example_files(README.read_text())
    assert {"orders/workflows.py", "pytest.ini", "tests/test_orders.py"} <= set(files)
    assert "@pytest.mark.django_db" in files["tests/test_orders.py"]
    assert "pytest-django" in README.read_text().split("## Testing your workflows", 1)[1]


def test_readme_testing_example_runs_in_a_new_project(tmp_path):
    text = README.read_text()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    files = {**example_files(text), **example_files(DOCS_TESTING.read_text())}
    assert "tests/test_flaky.py" in files
    for path, body in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
        if path.endswith(".py"):  # a package for every module directory but tests/ (rootdir)
            for parent in target.relative_to(tmp_path).parents:
                if str(parent) not in (".", "tests"):
                    (tmp_path / parent / "__init__.py").touch()
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + "\n" + settings_block(text))

    # Only the project's own pytest.ini configures pytest-django: not this suite's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CHRONO_FORGE_"))}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"^2 passed", output, re.M), output
