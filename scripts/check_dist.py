"""Check a built sdist and wheel: `python scripts/check_dist.py DIST_DIR` (run by scripts/package).

Fails (exit 1, one line per problem) when:
- a classifier is not a registered trove classifier (PyPI rejects the upload);
- the artefacts' version is not ``chrono_forge.__version__`` (the one place it is written);
- the sdist lacks a file the README links to (a link or an image), or the LICENSE/CHANGELOG;
- the sdist ships tests (they need the repository's harness and cannot run from it);
- the wheel lacks the templates, static files, migrations or ``py.typed``.
"""

from __future__ import annotations

import ast
import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

from trove_classifiers import classifiers as known_classifiers

ROOT = Path(__file__).resolve().parent.parent
# [text](target) and ![alt](target); an optional "title" after the target is ignored.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def source_version() -> str:
    tree = ast.parse((ROOT / "chrono_forge" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise SystemExit("chrono_forge/__init__.py defines no __version__")


def readme_targets(readme: str) -> set[str]:
    """The repository files the README links to (no URLs, no in-page anchors)."""
    targets = set()
    for target in LINK.findall(readme):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.add(target.split("#", 1)[0])
    return targets


def main(dist: Path) -> list[str]:
    problems: list[str] = []
    sdists = sorted(dist.glob("*.tar.gz"))
    wheels = sorted(dist.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        return [f"expected one sdist and one wheel in {dist}, found {sdists + wheels}"]
    version = source_version()

    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(whl.read(info).decode())
    if metadata["Version"] != version:
        problems.append(f"wheel version {metadata['Version']} != __version__ {version}")
    for classifier in metadata.get_all("Classifier") or []:
        if classifier not in known_classifiers:
            problems.append(f"unknown trove classifier: {classifier!r}")
    if metadata.get("License-Expression") != "MIT":
        problems.append(f"License-Expression is {metadata.get('License-Expression')!r}, not MIT")
    for needed in (
        "chrono_forge/py.typed",
        "chrono_forge/migrations/0001_initial.py",
        "chrono_forge/static/chrono_forge/admin.css",
        "chrono_forge/templates/admin/chrono_forge/workflow/change_form.html",
    ):
        if needed not in names:
            problems.append(f"the wheel lacks {needed}")
    if any(n.startswith("tests/") for n in names):
        problems.append("the wheel ships the tests package")

    with tarfile.open(sdists[0]) as tar:
        top = f"chrono_forge-{version}/"
        members = {m.name.removeprefix(top) for m in tar.getmembers() if m.isfile()}
        if not all(m.name.startswith(top.rstrip("/")) for m in tar.getmembers()):
            problems.append(f"the sdist's top directory is not {top}")
        readme = tar.extractfile(top + "README.md").read().decode()
    for target in sorted(readme_targets(readme) | {"LICENSE", "CHANGELOG.md"}):
        if target not in members:
            problems.append(f"the sdist lacks {target} (linked from the README or required)")
    shipped_tests = sorted(m for m in members if m.startswith(("tests/", "bench/")))
    if shipped_tests:
        problems.append(f"the sdist ships tests that cannot run from it: {shipped_tests[:3]} ...")
    return problems


if __name__ == "__main__":
    found = main(Path(sys.argv[1]))
    for problem in found:
        print(f"check_dist: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    print("check_dist: classifiers, version, README links, licence and package data all present")
