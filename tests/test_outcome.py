"""How a trial ended: one rule for every record of it (store, Optuna, MLflow, console)."""
from types import SimpleNamespace

from transcenter.platform.outcome import COMPLETED, STOPPED, ended_status, error_summary, trial_error


def test_a_trial_at_its_last_epoch_completed_and_one_before_it_stopped():
    assert [ended_status(epoch, 3) for epoch in (1, 2, 3)] == [STOPPED, STOPPED, COMPLETED]


def test_a_failed_trials_error_is_its_innermost_own_error_line(tmp_path):
    error_file = tmp_path / "error.txt"
    error_file.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                          "ray.exceptions.RayTaskError(ValueError): wrapped\n"
                          "ValueError: data: /d/a.xml: box outside the image\n")
    assert trial_error(SimpleNamespace(error_file=str(error_file))) == \
        "ValueError: data: /d/a.xml: box outside the image"
    assert trial_error(SimpleNamespace(error_file=str(tmp_path / "missing.txt"))) is None
    assert trial_error(SimpleNamespace(error_file=None)) is None
    assert error_summary("platform.errors.TrialFailure: 3 workers lost") == "3 workers lost"
