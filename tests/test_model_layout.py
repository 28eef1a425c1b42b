"""The model package's layout rules (style.md "Here"): the detector imports nothing from training or
evaluation, TransCenter's modules never import the CenterNet baseline, and the light entry points
load no torch (the study driver imports them only to validate configs)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from transcenter.model.detector import config

DETECTOR = Path(__file__).resolve().parent.parent / "model" / "detector"


def _imports(path: Path) -> set[str]:
    """Returns the absolute module names ``path`` imports (``import a.b``, ``from a.b import c``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def _modules_under(folder: Path) -> list[Path]:
    paths = sorted(folder.rglob("*.py"))
    assert paths, f"no modules under {folder}"
    return paths


@pytest.mark.parametrize("path", _modules_under(DETECTOR), ids=lambda p: str(p.relative_to(DETECTOR)))
def test_detector_imports_nothing_from_training_or_evaluation(path):
    bad = {m for m in _imports(path)
           if m.startswith(("transcenter.model.training", "transcenter.model.evaluation"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_transcenter_modules_do_not_import_centernet():
    # Only the registry joins the two heads.
    for path in _modules_under(DETECTOR):
        if path.name == "registry.py" or "centernet" in path.relative_to(DETECTOR).parts:
            continue
        bad = {m for m in _imports(path) if m.startswith("transcenter.model.detector.centernet")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("module", ["transcenter.model", "transcenter.model.training.experiment"])
def test_light_modules_load_no_torch(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_holds_exactly_the_heads_the_config_accepts():
    from transcenter.model.detector.registry import HEADS
    assert tuple(HEADS) == config.HEADS
