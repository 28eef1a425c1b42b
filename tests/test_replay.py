"""The replay CLI on a finished study written by the result store, without Ray: the
study's own setting reproduces its best trial and its hours; another setting is reported beside
it; a folder without recorded settings is refused in one line."""
import json
import os
import subprocess
import sys

import pytest

from transcenter.platform import replay
from transcenter.platform.search import Categorical, SearchSpace
from transcenter.platform.simulated_time import SimulatedStudy, SimulatedTrial
from transcenter.store.results import ResultStore

SPACE = SearchSpace({"loss.alpha": Categorical([1.0, 2.0, 3.0])})
FINAL = {1.0: 30.0, 2.0: 50.0, 3.0: 40.0}  # AP50 after the last epoch
EPOCHS, EPOCH_S = 3, 120.0


@pytest.fixture
def study(tmp_path):
    """A finished grid study of 3 trials x 3 epochs, one GPU per trial."""
    store = ResultStore(str(tmp_path), "grid")
    for number, alpha in enumerate(FINAL):
        key = f"trial-{number:05d}"
        for epoch in range(1, EPOCHS + 1):
            store.record_epoch(key, epoch, {"loss.alpha": alpha},
                               {"AP50": FINAL[alpha] * epoch / EPOCHS}, time_s=EPOCH_S)
        store.record_trial(key, {"loss.alpha": alpha}, "completed")
    store.write_meta({"search_space": SPACE.describe(), "objectives": {"AP50": "max"},
                      "sampler": "grid", "metric": "AP50", "mode": "max",
                      "settings": {"num_samples": 3, "epochs": EPOCHS, "seed": 0, "asha": False,
                                   "grace_period": 1, "reduction_factor": 2,
                                   "max_concurrent_trials": 1, "workers": 1,
                                   "gpus_per_worker": 1.0, "cpus_per_worker": 4.0}})
    return tmp_path / "grid"


def test_the_replay_of_the_studys_own_setting_reproduces_it(study, capsys):
    assert replay.main([str(study), "--json", "--seeds", "2", "--stopping", "asha", "--slots", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    actual = out["actual"]
    assert actual["best"] == pytest.approx(50.0) and actual["best_spread"] == 0
    assert actual["best_trial"] == "trial-00001"  # the grid's order: same seed, same sampler
    assert actual["gpu_hours"] == pytest.approx(3 * EPOCHS * EPOCH_S / 3600)
    assert actual["hours_unit"] == "GPU"
    assert actual["wall_h"] == pytest.approx(actual["gpu_hours"])  # one slot at a time
    (other,) = out["settings"]
    assert other["setting"] == "grid, ASHA (grace 1, rf 2), 3 trials, 3 at once"
    assert other["wall_h"] < actual["wall_h"]  # three slots at once
    assert other["gpu_hours"] <= actual["gpu_hours"]


def test_a_folder_without_recorded_settings_is_refused(tmp_path, capsys):
    assert replay.main([str(tmp_path)]) == 2
    assert "no study.json with the study's settings" in capsys.readouterr().err


def test_without_json_it_prints_one_line_per_setting(study, capsys):
    assert replay.main([str(study), "--seeds", "1", "--stopping", "none", "--sampler", "random"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "actual (grid, no early stopping, 3 trials, 1 at once): 0.300 GPU-hours, 0.300 h wall, "
        "best AP50 50.00 ± 0.00",
        "replayed (random, no early stopping, 3 trials, 1 at once): 0.300 GPU-hours, 0.300 h wall, "
        "best AP50 50.00 ± 0.00"]


def test_without_a_setting_flag_it_compares_the_early_stopping_policies(study, capsys):
    assert replay.main([str(study), "--seeds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    replayed = [line.split(":")[0] for line in lines if line.startswith("replayed")]
    assert replayed == ["replayed (grid, no early stopping, 3 trials, 1 at once)",
                        "replayed (grid, ASHA (grace 1, rf 2), 3 trials, 1 at once)",
                        "replayed (grid, audited ASHA (grace 1, rf 2, one stratum, every 16th trial a "
                        "sentinel, rungs below tau 0.5 stop deciding), 3 trials, 1 at once)"]
    audited = lines.index(next(line for line in lines if "audited" in line))
    assert lines[audited + 1].startswith("  rung agreement with the final ranking: epoch 1: tau ")


def test_a_grid_replay_is_capped_at_the_grid(study, capsys):
    assert replay.main([str(study), "--json", "--seeds", "1", "--num-samples", "500"]) == 0
    captured = capsys.readouterr()
    assert "the grid has 3 points: --num-samples 500 is capped at them" in captured.err
    (other,) = json.loads(captured.out)["settings"]
    assert other["setting"].endswith(", 3 trials, 1 at once")


def test_the_anytime_figure_is_drawn_by_the_dashboards(study, tmp_path, capsys):
    figure = tmp_path / "anytime.png"
    assert replay.main([str(study), "--json", "--seeds", "2", "--figure", str(figure)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    hours, best = zip(*out["actual"]["anytime"][0])
    assert list(hours) == sorted(hours) and list(best) == sorted(best)  # spend and best only grow
    assert best[-1] == out["actual"]["best"] and len(out["actual"]["anytime"]) == 2


def test_hypervolume_counts_the_trials_that_ran_every_epoch_in_three_objectives():
    """Two finished boxes from the reference (AP 0, 20 GMACs, 10 ms): 50·10·5 + 40·15·2 minus
    their overlap 40·10·2 = 2,900; the trial stopped after one epoch adds nothing."""
    def trial(epochs, ap, gmacs, ms):
        return SimulatedTrial("t", {}, epochs, 0.0, 1.0, {"AP": ap, "gmacs": gmacs, "ms": ms})
    study = SimulatedStudy([trial(3, 50.0, 10.0, 5.0), trial(3, 40.0, 5.0, 8.0),
                            trial(1, 90.0, 1.0, 1.0)], wall_s=1.0)
    objectives = {"AP": "max", "gmacs": "min", "ms": "min"}
    reference = {"AP": 0.0, "gmacs": 20.0, "ms": 10.0}
    assert replay.hypervolume(study, objectives, 3, reference) == pytest.approx(2900.0)
    assert replay.hypervolume(study, {"AP": "max"}, 3, {"AP": 0.0}) is None


def test_the_replay_command_as_a_user_types_it(study, tmp_path):
    """Only PATH and HOME set: a grid replay is capped at the grid and says so, without one
    warning per re-run configuration; the settings read as a line; the figure's path is named."""
    figure = tmp_path / "anytime.png"
    done = subprocess.run(
        [sys.executable, "-m", "transcenter.platform.replay", str(study), "--seeds", "1",
         "--num-samples", "500", "--figure", str(figure)],
        capture_output=True, text=True, timeout=300, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip() == ("note: the grid has 3 points: --num-samples 500 is capped at them "
                                   "(--sampler tpe or random replays more trials)")
    assert done.stdout.splitlines() == [
        "actual (grid, no early stopping, 3 trials, 1 at once): 0.300 GPU-hours, 0.300 h wall, "
        "best AP50 50.00 ± 0.00",
        "replayed (grid, no early stopping, 3 trials, 1 at once): 0.300 GPU-hours, 0.300 h wall, "
        "best AP50 50.00 ± 0.00",
        f"figure: {figure}"]
    assert figure.stat().st_size > 1000
