"""The real path: `ray job submit --working-dir . -- python studies/heatmap_size.py --preset smoke`
against a local Ray head (the session's `ray start --head`), then the parquet rows are checked."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def test_ray_job_submit_runs_a_smoke_study(ray_cluster, tmp_path):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_cli, "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", ".",
           "--", "python", "studies/heatmap_size.py", "--preset", "smoke", "--num-samples", "2",
           "--epochs", "2", "--storage-path", str(tmp_path), "--set", "data.num_train=16",
           "--set", "data.num_val=8"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "succeeded" in done.stdout
    assert f"results: {tmp_path}/heatmap_size/epochs (4 epoch rows)" in done.stdout
    epochs = pd.read_parquet(tmp_path / "heatmap_size" / "epochs")
    assert len(epochs) == 4 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs["model.heatmap_size"].nunique() == 2
    assert (tmp_path / "heatmap_size" / "report.html").stat().st_size > 10_000
