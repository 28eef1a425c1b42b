"""The HTML report renders in headless Chromium: every figure loads, no console error; a screenshot.

The screenshot is kept as a test artifact: ``test-artifacts/report.png`` (repository root).
"""

import struct

import pytest
from browser import ARTIFACTS, Browser, require_chromium

from transcenter.dashboards import report
from transcenter.store.results import ResultStore

SIZES = (16, 32, 64, 128)


@pytest.fixture(scope="module")
def chromium():
    return require_chromium()


@pytest.fixture
def study_dir(tmp_path):
    """Twelve trials over the four heatmap sizes, AP in percent as the evaluator reports it."""
    store = ResultStore(str(tmp_path / "results"), "heatmap_size")
    for i in range(12):
        size = SIZES[i % 4]
        p = {"model": {"heatmap_size": size}, "optim": {"lr": 1e-4 * (1 + i)},
             "loss": {"alpha": 1.5 + i / 8}}
        for epoch in range(1, 7):
            ap50 = 75.0 * (1 - 0.6 ** epoch) - abs(size - 64) / 16 + i / 4
            store.record_epoch(f"t{i:02d}", epoch, p, {
                "AP50": ap50, "AP": 0.7 * ap50, "AP75": 0.75 * ap50, "loss": 4 / epoch,
                "loss_pos": 1.5 / epoch, "loss_size": 2.5 / epoch * (1 + size / 128)}, time_s=12.0)
        store.record_trial(f"t{i:02d}", p, "completed")
    store.record_trial("t12", {"model.heatmap_size": 128}, "error", error="CUDA out of memory")
    return tmp_path / "results" / "heatmap_size"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_report_renders_with_every_image_and_no_console_error(chromium, study_dir, tmp_path):
    path = report.write_report(study_dir, tmp_path / "report.html")
    with Browser(width=1280, height=2000) as browser:
        browser.open(path.as_uri())
        images = browser.images()
        text = browser.evaluate("document.body.innerText")
        overflow = browser.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        screenshot = browser.screenshot(ARTIFACTS / "report.png")
        errors = browser.console_errors
    assert len(images) == 4, images  # lower limit, losses, search, importance
    broken = [i for i in images if not (i["complete"] and i["naturalWidth"] > 0 and i["naturalHeight"] > 0)]
    assert broken == [], f"images that did not load: {broken}"
    assert errors == [], f"console errors: {errors}"
    assert "TransCenter study heatmap_size" in text and "AP50 (%)" in text and "CUDA out of memory" in text
    assert overflow <= 0, "the report is wider than a 1280 px window"
    width, height = png_size(screenshot)
    assert width == 1280 and height >= 2000


def test_the_check_sees_broken_images_and_console_errors(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png" alt="x">'
                    '<script>console.error("planted")</script></body></html>', encoding="utf-8")
    with Browser(width=400, height=300) as browser:
        browser.open(page.as_uri())
        images = browser.images()
        errors = browser.console_errors
    assert [(i["complete"], i["naturalWidth"]) for i in images] == [(True, 0)]
    assert any("planted" in e for e in errors) and any("missing.png" in e for e in errors), errors
