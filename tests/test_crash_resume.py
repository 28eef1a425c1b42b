"""A study driver killed after every kind of write, and at random instants, then resumed: every
trial-epoch once in parquet, every trial once in Optuna with the state and per-epoch values
parquet has, and no epoch before a kill's last checkpoint trained again (issue 21)."""
import os
import random

import pytest
from crash_resume import ALL_POINTS, audit, fault, run_to_the_end, study_command

from transcenter.platform import faults

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_killed_after_each_kind_of_write_in_turn_resumes_exactly(ray_cluster, inject_faults,
                                                                 tmp_path):
    """One grid study (3 trials x 2 epochs), killed once at each kill point in turn: every run
    dies at the first point not yet fired, and the next run resumes it."""
    markers = tmp_path / "fired"
    markers.mkdir()
    inject_faults([fault(point, markers / point) for point in ALL_POINTS])
    env = {**os.environ, faults.ENV: str(inject_faults.path)}
    cmd = study_command("grid", tmp_path, "sweep", ray_cluster.address)
    runs = run_to_the_end(cmd, env, tmp_path / "driver.log", max_runs=len(ALL_POINTS) + 2)
    assert runs.returncodes[-1] == 0, runs.stderr[-3000:]
    assert sorted(p.name for p in markers.iterdir()) == sorted(ALL_POINTS)  # each fired once
    assert runs.kills == len(ALL_POINTS)
    result = audit(tmp_path, "sweep", samples=3, epochs=2, kills=runs.kills,
                   faults_file=inject_faults.path)
    assert result["problems"] == []
    assert result["optuna_states"] == {"COMPLETE": 3}


def test_killed_at_random_instants_resumes_exactly(ray_cluster, inject_faults, tmp_path):
    """A user's crashes: one TPE + ASHA study SIGKILLed at three seeded random instants after its
    first epoch row, each followed by ``--resume``; ASHA prunes some trials on the way."""
    rng = random.Random(21)
    cmd = study_command("tpe_asha", tmp_path, "random_kills", ray_cluster.address)
    inject_faults([])  # no faults: the workers record the epochs they train
    runs = run_to_the_end(cmd, dict(os.environ), tmp_path / "driver.log",
                          kill_after=[rng.uniform(0, 12) for _ in range(3)],
                          store_dir=tmp_path / "random_kills")
    assert runs.returncodes[-1] == 0, runs.stderr[-3000:]
    assert runs.kills == 3
    result = audit(tmp_path, "random_kills", samples=4, epochs=3, kills=runs.kills,
                   faults_file=inject_faults.path)
    assert result["problems"] == []
