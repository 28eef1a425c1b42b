"""The terminal summary and the self-contained HTML report, on synthetic, empty and failed studies."""

import base64
import math
from html.parser import HTMLParser

import pytest

from transcenter.dashboards import report, summary
from transcenter.store.results import ResultStore

SIZES = (16, 32, 64, 128)
AP50_BY_EPOCH = (10.0, 20.0, 40.0, 30.0)  # percent; peaks at epoch 3, a trial is worth its last


class Attributes(HTMLParser):
    """Collects every tag and every src/href attribute of a document."""

    def __init__(self):
        super().__init__()
        self.tags, self.links = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [value for name, value in attrs if name in ("src", "href")]


def parse(path):
    parser = Attributes()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.fixture
def synthetic(tmp_path):
    store = ResultStore(str(tmp_path / "results"), "heatmap_size")
    for i in range(8):
        size = SIZES[i % 4]
        p = {"model": {"heatmap_size": size}, "optim": {"lr": 1e-4 * (1 + i)}, "loss": {"alpha": 1.5 + i / 8}}
        for epoch in (1, 2, 3, 4):
            store.record_epoch(f"t{i}", epoch, p, {
                "AP": 5.0 * epoch + i, "AP50": AP50_BY_EPOCH[epoch - 1] + i, "AP75": 2.0 * epoch,
                "loss_pos": 1 / epoch, "loss_size": 2 / epoch}, time_s=10.0)
        store.record_trial(f"t{i}", p, "completed")
    store.record_trial("t9", {"model.heatmap_size": 16}, "error", error="RuntimeError: <boom> & more")
    return tmp_path / "results" / "heatmap_size"


def test_report_is_one_self_contained_file(synthetic, tmp_path):
    out_dir = tmp_path / "out"
    path = report.write_report(synthetic, out_dir / "report.html")
    assert path == out_dir / "report.html" and [p.name for p in out_dir.iterdir()] == ["report.html"]
    parsed = parse(path)
    images = [link for link in parsed.links if link.startswith("data:image/png;base64,")]
    assert len(images) == 4  # lower limit, losses, search, importance
    assert images and all(base64.b64decode(i.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert parsed.links == images, "every src/href must be an embedded image"
    assert not any("http" in link for link in parsed.links)
    assert "script" not in parsed.tags and "link" not in parsed.tags
    text = path.read_text(encoding="utf-8")
    assert "RuntimeError: &lt;boom&gt; &amp; more" in text
    assert "<td>73.5</td>" in text  # the paper's Table 4 AP50 for 16 x 16 as printed, beside ours
    assert "0.735" not in text and "AP values are in percent" in text and "AP50 (%)" in text
    assert "vs. the trial&#x27;s AP50 (%) at its last epoch</h2>" in text
    assert "<th>final.AP50</th>" in text and "<th>best" not in text


def test_search_and_trials_tables_are_each_trials_last_epoch(synthetic):
    tables = summary.collect(synthetic)
    last = {f"t{i}": AP50_BY_EPOCH[-1] + i for i in range(8)}
    assert tables.search.set_index("trial_id")["final.AP50"].to_dict() == last
    status = tables.status.set_index("trial_id")
    assert status["final.AP50"].dropna().to_dict() == last and math.isnan(status.loc["t9", "final.AP50"])
    figure = report._search_figure(tables.search, ["optim.lr"], set())
    assert figure.axes[0].get_ylabel() == "AP50 (%) at the last epoch"


@pytest.mark.parametrize("kind", ["empty", "failed"])
def test_report_of_empty_or_failed_study_is_valid(tmp_path, kind):
    store = ResultStore(str(tmp_path), kind)
    if kind == "failed":
        for i in range(3):
            p = {"model.heatmap_size": SIZES[i]}
            store.record_epoch(f"t{i}", 1, p, {"loss": math.nan, "AP": math.nan, "AP50": math.nan})
            store.record_trial(f"t{i}", p, "error", error=f"loss diverged in trial {i}")
    path = report.write_report(tmp_path / kind, tmp_path / f"{kind}.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert parse(path).links == []
    assert "No importance" in text
    if kind == "failed":
        assert "loss diverged in trial 2" in text
    else:
        assert "No epoch has been recorded yet." in text


def test_report_puts_overlap_recall_beside_ap_per_head(tmp_path):
    store = ResultStore(str(tmp_path), "overlap")
    for i, head in enumerate(("transcenter", "centernet")):
        p = {"model.head": head, "model.heatmap_size": 16}
        store.record_epoch(f"t{i}", 1, p, {"AP": 30.0 + 5 * i, "AP50": 61.5 + i,
                                           "overlap_recall": 87.25 - 40 * i})
        store.record_trial(f"t{i}", p, "completed")
    text = report.write_report(tmp_path / "overlap", tmp_path / "r.html").read_text(encoding="utf-8")
    assert summary.OVERLAP_TITLE.split(":")[0] in text
    assert "<th>centernet</th>" in text and "<td>87.25</td>" in text and "<td>47.25</td>" in text


def test_report_command_line(synthetic, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert report.main([str(synthetic), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()


def test_summary_prints_tables(synthetic, capsys):
    assert summary.main([str(synthetic)]) == 0
    text = capsys.readouterr().out
    for title in (summary.TRIALS_TITLE, "Lower limit", summary.UPPER_TITLE, "heatmap loss",
                  summary.IMPORTANCE_TITLE):
        assert title in text
    assert "paper.AP50" in text and "RuntimeError" in text and "optim.lr" in text
    assert "The study reports no 'overlap_recall'" in text


def test_summary_of_study_without_epochs(tmp_path, capsys):
    ResultStore(str(tmp_path), "early").record_trial("t0", {"model.heatmap_size": 16}, "error", error="oom")
    assert summary.main([str(tmp_path / "early")]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("No epoch has been recorded yet.") == 4 and "oom" in captured.out
    assert "Empty DataFrame" not in captured.out
    assert summary.main([str(tmp_path / "missing")]) == 0
    assert "no results under" in capsys.readouterr().err
