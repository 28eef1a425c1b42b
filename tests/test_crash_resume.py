"""A study driver killed after every kind of write, then resumed: every trial-epoch once in
parquet, every trial once in Optuna with the state and per-epoch values parquet has, and no epoch
before a kill's last checkpoint trained again. Kills at random instants:
``tests/test_study.py``; every kill point, each on its own, for three kinds of study:
``tests/bench/crash_sweep.py``."""
import os

import pytest
from crash_resume import audit, fault, run_to_the_end, study_command

from transcenter.platform import faults

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# The kill points after which the study's records disagree: the trial is in Optuna only, an epoch's
# value is in Optuna but not in parquet, a parquet file is written but not in place, Optuna has the
# trial's end and parquet does not, and a worker's checkpoint is on disk but not in Ray Train's
# records. The remaining points (after both stores agree) run in tests/bench/crash_sweep.py.
POINTS = ("trial_created", "epoch_reported", "parquet_write", "trial_told", "checkpoint_written")


def test_killed_after_each_kind_of_write_in_turn_resumes_exactly(ray_cluster, inject_faults,
                                                                 tmp_path):
    """One TPE + ASHA study (2 trials x 2 epochs), killed once at each of :data:`POINTS` in turn: every
    run dies at the first point not yet fired, and the next run resumes it."""
    markers = tmp_path / "fired"
    markers.mkdir()
    inject_faults([fault(point, markers / point) for point in POINTS])
    env = {**os.environ, faults.ENV: str(inject_faults.path)}
    cmd = study_command("tpe_asha", tmp_path, "sweep", ray_cluster.address, "--num-samples", "2")
    runs = run_to_the_end(cmd, env, tmp_path / "driver.log", max_runs=len(POINTS) + 2)
    assert runs.returncodes[-1] == 0, runs.stderr[-3000:]
    assert sorted(p.name for p in markers.iterdir()) == sorted(POINTS)  # each fired once
    # A worker's kill can land on a driver that a kill point has already killed.
    assert len(POINTS) - 1 <= runs.kills <= len(POINTS)
    result = audit(tmp_path, "sweep", samples=2, epochs=2, kills=runs.kills,
                   faults_file=inject_faults.path)
    assert result["problems"] == []
    assert sum(result["optuna_states"].values()) == 2
