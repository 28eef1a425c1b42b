"""The Grafana dashboard plots exactly what the trainer exports, and the exporter records it."""

import json
import logging
import math
import pickle
import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from transcenter.platform import telemetry

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboards" / "grafana" / "transcenter.json"
METRIC_TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
RAY_CLUSTER_METRICS = ("ray_node_cpu_utilization", "ray_node_mem_used", "ray_node_gpus_utilization")


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(panels):
    """Every panel, those inside (collapsed) rows included."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def data_panels(dashboard):
    return [p for p in all_panels(dashboard["panels"]) if p["type"] != "row"]


def exprs(dashboard):
    return [t["expr"] for p in data_panels(dashboard) for t in p["targets"]]


def variable_queries(dashboard):
    return [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def transcenter_tokens(text):
    return {token for token in METRIC_TOKEN.findall(text) if "transcenter" in token}


def test_dashboard_is_a_modern_templated_grafana_dashboard(dashboard):
    assert dashboard["schemaVersion"] >= 36 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for name in ("study", "trial_id"):
        assert variables[name]["type"] == "query"
        assert variables[name]["definition"].startswith("label_values(")
        assert variables[name]["definition"].rstrip(")").endswith(f", {name}")
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_panel_queries_prometheus(dashboard):
    panels = data_panels(dashboard)
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])


def test_queries_use_exactly_the_exported_metric_names(dashboard):
    exported = {telemetry.prometheus_name(name) for name in telemetry.METRIC_NAMES.values()}
    assert all(name.startswith("ray_transcenter_") for name in exported)
    plotted = set().union(*(transcenter_tokens(e) for e in exprs(dashboard)))
    queried = plotted.union(*(transcenter_tokens(q) for q in variable_queries(dashboard)))
    assert queried <= exported, f"not exported by the trainer: {sorted(queried - exported)}"
    assert exported <= plotted, f"exported but never plotted: {sorted(exported - plotted)}"
    for expr in exprs(dashboard):  # a trial's series are told apart by its labels
        if transcenter_tokens(expr):
            assert "study" in expr and "trial_id" in expr, expr


def test_ray_cluster_panels_use_metrics_ray_exports(dashboard):
    from ray.dashboard.modules.reporter.reporter_agent import METRICS_GAUGES

    ray_names = {f"ray_{name}" for name in METRICS_GAUGES}
    used = {t for e in exprs(dashboard) for t in METRIC_TOKEN.findall(e) if t.startswith("ray_node_")}
    assert set(RAY_CLUSTER_METRICS) <= used
    assert used <= ray_names, f"not exported by this Ray: {sorted(used - ray_names)}"


class FakeGauge:
    made: ClassVar[list] = []

    def __init__(self, name, description, tag_keys):
        self.name, self.description, self.tag_keys, self.values = name, description, tag_keys, []
        FakeGauge.made.append(self)

    def set(self, value, tags):
        assert isinstance(value, float) and set(tags) == set(self.tag_keys)
        self.values.append((value, tags))


def test_record_sets_one_gauge_per_metric_and_skips_nan():
    FakeGauge.made = []
    gauges = telemetry.EpochGauges(gauge_factory=FakeGauge)
    assert FakeGauge.made == []  # made lazily, on the first record
    epoch = {"epoch": 3, "AP50": np.float64(41.5), "AP": math.nan, "loss": 2.5, "loss_pos": 1.0,
             "loss_size": 0.5, "loss_cls": 0.75, "loss_offset": 0.25, "images_per_s": 120.0,
             "lr": 1e-4, "train_time_s": 30.0}
    recorded = gauges.record("heatmap_size", "t0", epoch)
    assert sorted(g.name for g in FakeGauge.made) == sorted(telemetry.METRIC_NAMES.values())
    assert all(g.tag_keys == ("study", "trial_id") for g in FakeGauge.made)
    assert "transcenter_ap" not in recorded and len(recorded) == len(telemetry.METRIC_NAMES) - 1
    by_name = {g.name: g for g in FakeGauge.made}
    assert by_name["transcenter_ap50"].values == [(41.5, {"study": "heatmap_size", "trial_id": "t0"})]
    assert by_name["transcenter_epoch"].values[0][0] == 3.0 and by_name["transcenter_ap"].values == []
    gauges.record("heatmap_size", "t0", {"AP": None, "AP50": "n/a"})
    assert by_name["transcenter_ap"].values == [] and len(by_name["transcenter_ap50"].values) == 1
    assert len(FakeGauge.made) == len(telemetry.METRIC_NAMES)  # made once
    assert pickle.loads(pickle.dumps(gauges))._gauges is None


def test_record_without_a_ray_cluster_neither_raises_nor_starts_ray():
    import ray

    started = ray.is_initialized()  # a session-wide Ray fixture may already run
    recorded = telemetry.EpochGauges().record("s", "t0", {"AP50": 10.0, "epoch": 1})
    assert recorded == {"transcenter_ap50": 10.0, "transcenter_epoch": 1.0}
    assert ray.is_initialized() == started


def test_gauges_that_cannot_be_made_turn_recording_off(caplog):
    def broken(*args):
        raise RuntimeError("no metrics agent")

    gauges = telemetry.EpochGauges(gauge_factory=broken)
    with caplog.at_level(logging.WARNING, logger=telemetry.__name__):
        assert gauges.record("s", "t0", {"AP50": 10.0}) == {}
        assert gauges.record("s", "t0", {"AP50": 11.0}) == {}
    assert sum("gauges are off" in r.getMessage() for r in caplog.records) == 1
