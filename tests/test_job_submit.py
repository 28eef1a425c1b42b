"""The README's cluster block, read from README.md and typed into a fresh shell as a new user would:
``env -i`` with only PATH and a new, empty HOME, ``.venv`` activated, in a copy of the repository.
It starts its own head (``ray start``), submits the smoke study with ``ray job submit`` and stops
Ray; nothing comes from pytest's environment. While the job runs, optuna-dashboard (as
``make dashboard`` starts it) shows the study's trials; afterwards every file of the study is under
the storage path the block names, and the auth token never appears in the output."""
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from browser import get_json, optuna_dashboard
from isolated import REPO, fresh_shell, kill

pytestmark = pytest.mark.slow
SMOKE_TRIALS, SMOKE_EPOCHS = 4, 2  # the heatmap-size grid; the smoke preset's epochs


def readme_cluster_block() -> str:
    """Returns the first bash block of the README's "On a cluster" section."""
    section = (REPO / "README.md").read_text().split("### On a cluster: `ray job submit`", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def copy_of_repo(dest: Path) -> Path:
    """Copies the files git tracks or would track (no .venv, no results) to ``dest``."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


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


def test_readme_cluster_block_runs_in_a_fresh_shell(tmp_path):
    block = readme_cluster_block()
    assert "ray job submit --working-dir ." in block and "studies/heatmap_size.py" in block
    repo = copy_of_repo(tmp_path / "repo")
    home = tmp_path / "home"
    shell = fresh_shell(f"set -e\n{block}", cwd=repo, home=home, ray_tmp=tmp_path / "ray",
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    study = repo / "results" / "heatmap_size"
    try:
        live = _trials_seen_live(study, shell)
        out = shell.communicate(timeout=900)[0]
    finally:
        kill(shell)
    assert shell.returncode == 0, out[-4000:]
    assert "succeeded" in out
    assert live, "optuna-dashboard never showed a trial with AP50 while the study ran"
    assert all("model.heatmap_size" in {p["name"] for p in t["params"]} for t in live)
    assert f"trials: {SMOKE_TRIALS} completed" in out

    epochs = pd.read_parquet(study / "epochs")
    assert len(epochs) == SMOKE_TRIALS * SMOKE_EPOCHS
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs["model.heatmap_size"].nunique() == SMOKE_TRIALS
    assert (study / "report.html").stat().st_size > 10_000
    # Checkpoints live with the study, not in Ray's temporary copy of the working dir.
    assert len(list((study / "train").glob("*/checkpoint_*/checkpoint.pt"))) == SMOKE_TRIALS
    token = (home / ".ray" / "auth_token").read_text().strip()
    assert len(token) >= 16 and token not in out
