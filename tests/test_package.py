"""Release metadata that scripts/package checks on built artefacts, checked here from the sources.

scripts/package (run by CI) builds the sdist and wheel and inspects them; these quick checks run
with the suite, so an edit that would fail it (a README link to a file the sdist does not carry, an
unknown classifier, a second version number) is caught before CI.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from trove_classifiers import classifiers as known_classifiers

import chrono_forge

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

pytestmark = pytest.mark.sqlite_only  # no database involved: once is enough

# What MANIFEST.in ships besides the package: the README, the licence, the changelog and docs/.
SHIPPED_FILES = {"README.md", "LICENSE", "CHANGELOG.md"}


def check_dist():
    spec = importlib.util.spec_from_file_location("check_dist", ROOT / "scripts" / "check_dist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_links_only_to_files_the_sdist_carries():
    targets = check_dist().readme_targets((ROOT / "README.md").read_text())
    assert "docs/operations.md" in targets  # the parser finds the README's links
    for target in sorted(targets):
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"
        assert target in SHIPPED_FILES or target.startswith("docs/"), (
            f"README links to {target}, which the sdist does not carry (MANIFEST.in ships docs/, "
            "LICENSE and CHANGELOG.md): link to a file under docs/ or write the path as code"
        )


def test_the_link_parser_sees_links_and_images_but_not_urls_or_anchors():
    text = '[a](docs/a.md) ![b](docs/b.png "t") [c](https://x.org/c) [d](#settings) [e](e.md#x)'
    assert check_dist().readme_targets(text) == {"docs/a.md", "docs/b.png", "e.md"}


def test_classifiers_are_registered_trove_classifiers():
    classifiers = PYPROJECT["project"]["classifiers"]
    assert "Framework :: Django :: 6.1" in classifiers
    assert [c for c in classifiers if c not in known_classifiers] == []


def test_the_version_lives_only_in_the_package():
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "chrono_forge.__version__"
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+", chrono_forge.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {chrono_forge.__version__}" in changelog, "CHANGELOG.md has no entry for it"
