"""Fault hooks cost nothing while fault injection is off, and parse the fault file once per change
while it is on (platform/faults.py)."""
import json
import os

from transcenter.platform import faults


def test_kill_points_touch_no_file_while_faults_are_off(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    monkeypatch.setattr(os, "stat", lambda *a, **k: (_ for _ in ()).throw(AssertionError("stat")))
    for _ in range(3):
        faults.kill_point("epoch_stored")
    assert faults.faults_for({"model.heatmap_size": 16}) == []


def test_the_fault_file_is_parsed_once_per_change(tmp_path, monkeypatch):
    path = tmp_path / "faults.json"
    path.write_text(json.dumps([{"point": "trial_told", "nth": 99, "marker": str(tmp_path / "m")}]))
    monkeypatch.setenv(faults.ENV, str(path))
    parsed = []
    real = json.loads
    monkeypatch.setattr(faults.json, "loads", lambda text: parsed.append(text) or real(text))
    for _ in range(50):
        faults.kill_point("epoch_stored")  # not due: no fault at this point
    assert len(parsed) == 1
    path.write_text(json.dumps([{"match": {"model.heatmap_size": 32}, "kind": "raise", "epoch": 1,
                                 "marker": str(tmp_path / "w")}]))
    assert faults.faults_for({"model.heatmap_size": 32})[0]["kind"] == "raise"  # the new file
    assert len(parsed) == 2
