"""The real path: `ray job submit --working-dir . -- python studies/heatmap_size.py --preset smoke`
against a local Ray head (the session's `ray start --head`). While the job runs, optuna-dashboard
(as `make dashboard` starts it) shows the study's trials; afterwards the parquet rows are checked."""
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from browser import get_json, optuna_dashboard

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def _trials_seen_live(study_dir: Path, job: subprocess.Popen) -> list[dict]:
    """Waits for the study's Optuna DB, serves it, and returns the trials the dashboard shows
    (with at least one per-epoch AP50) while the job is still running."""
    while not (study_dir / "optuna.db").exists():
        assert job.poll() is None, "the job ended before its study made an Optuna DB"
        time.sleep(0.5)
    with optuna_dashboard(study_dir) as url:
        while job.poll() is None:
            studies = get_json(f"{url}/api/studies")["study_summaries"]
            if studies:
                trials = get_json(f"{url}/api/studies/{studies[0]['study_id']}")["trials"]
                if any(t["intermediate_values"] for t in trials):
                    return trials
            time.sleep(1)
    return []


def test_ray_job_submit_runs_a_smoke_study_watched_live(ray_cluster, tmp_path):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_cli, "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", ".",
           "--", "python", "studies/heatmap_size.py", "--preset", "smoke", "--num-samples", "2",
           "--epochs", "3", "--storage-path", str(tmp_path), "--set", "data.num_train=16",
           "--set", "data.num_val=8"]
    job = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        live = _trials_seen_live(tmp_path / "heatmap_size", job)
        out = job.communicate(timeout=600)[0]
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out[-4000:]
    assert live, "optuna-dashboard never showed a trial with AP50 while the study ran"
    assert all("model.heatmap_size" in {p["name"] for p in t["params"]} for t in live)
    assert "succeeded" in out
    assert f"results: {tmp_path}/heatmap_size/epochs (6 epoch rows)" in out
    epochs = pd.read_parquet(tmp_path / "heatmap_size" / "epochs")
    assert len(epochs) == 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs["model.heatmap_size"].nunique() == 2
    assert (tmp_path / "heatmap_size" / "report.html").stat().st_size > 10_000
