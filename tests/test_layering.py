"""The import rule between the project's packages, kept by a test: every ``import`` and
``from ... import`` of ``transcenter.<package>`` in the source tree, at module level or inside a
function, must be one that :data:`MAY_IMPORT` allows. The rule, and why, is in
``docs/architecture.md``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Package -> the other packages its modules may import. ``store`` (the result store's tables, the
# metric names that are their columns, where a study's files live) imports none of ours; the detector
# (``model``) uses the store's metric names and URIs; the platform runs the model and writes the store;
# the dashboards read the store and use the model's evaluation maths, never the platform; a study
# script is the platform's command line.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "store": frozenset(),
    "model": frozenset({"store"}),
    "platform": frozenset({"model", "store"}),
    "dashboards": frozenset({"model", "store"}),
    "studies": frozenset({"platform"}),
}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """Returns ``(line, package)`` for each import of ``transcenter.<package>`` in ``source``,
    wherever it stands (module level, a function, a class, a conditional)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "transcenter":  # from transcenter import store
                modules = [f"transcenter.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, m.split(".")[1]) for m in modules
                  if m.startswith("transcenter.") and len(m.split(".")) > 1]
    return found


def violations(package: str, source: str, name: str) -> list[str]:
    """Returns ``file:line: package -> other`` for each import in ``source`` (file ``name`` of
    ``package``) that :data:`MAY_IMPORT` does not allow."""
    allowed = MAY_IMPORT[package] | {package}
    return [f"{name}:{line}: {package} -> {other}" for line, other in imported_packages(source)
            if other not in allowed]


def test_every_import_between_packages_keeps_the_rule():
    found = []
    for package in MAY_IMPORT:
        files = sorted((REPO / package).rglob("*.py"))
        assert files, f"no Python file in {package}/"
        for file in files:
            found += violations(package, file.read_text(), str(file.relative_to(REPO)))
    assert found == []


@pytest.mark.parametrize("source", [
    "from transcenter.platform.study import run_study\n",
    "import transcenter.platform.cli\n",
    "from transcenter import platform\n",
    "def f():\n    if True:\n        from transcenter.platform import faults\n    return faults\n",
    "class A:\n    def m(self):\n        import transcenter.dashboards.report as r\n",
])
def test_a_planted_bad_import_is_found_wherever_it_stands(source):
    assert violations("model", source, "model/planted.py") != []


def test_an_allowed_import_is_not_flagged():
    source = ("from transcenter.store.uri import filesystem\n"
              "def f():\n    from transcenter.model.data import collate\n")
    assert violations("model", source, "model/x.py") == []
    assert violations("store", "from transcenter.model import data\n", "store/x.py") != []
