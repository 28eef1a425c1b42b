"""optuna-dashboard on a study's optuna.db shows its trials and their per-epoch AP50, live.

The DB is written as a running study writes it: each trial reports AP50 (percent) every epoch as an
intermediate value, and one trial is still running. The dashboard runs in a subprocess, as
``make dashboard`` starts it, and is checked through its JSON API and in headless Chromium.
"""

import os
import time

import optuna
import pytest
from browser import ARTIFACTS, Browser, get_json, optuna_dashboard, require_chromium

from transcenter.dashboards import optuna_ui

STUDY = "heatmap_size"
SIZES = optuna.distributions.CategoricalDistribution([16, 32, 64, 128])


def ap50(trial, epoch):
    return 20.0 + 10.0 * epoch + trial  # percent


@pytest.fixture
def study_dir(tmp_path):
    """Three finished trials of four epochs and one running trial at epoch 2."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for number in range(4):
        trial = study.ask({"model.heatmap_size": SIZES})
        for epoch in range(1, 5 if number < 3 else 3):
            trial.report(ap50(number, epoch), epoch)
        if number < 3:
            study.tell(trial, ap50(number, 4))
    storage.engine.dispose()
    return tmp_path


@pytest.fixture
def dashboard(study_dir):
    """Starts the dashboard on a free port; yields its base URL; stops it."""
    with optuna_dashboard(study_dir) as url:
        yield url


def study_id(base):
    summaries = get_json(f"{base}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [STUDY]
    return summaries[0]["study_id"]


def curves(detail):
    return {t["number"]: (t["state"], {v["step"]: v["value"] for v in t["intermediate_values"]})
            for t in detail["trials"]}


def test_api_shows_trials_with_intermediate_ap50_live(study_dir, dashboard):
    sid = study_id(dashboard)
    detail = get_json(f"{dashboard}/api/studies/{sid}")
    assert detail["name"] == STUDY and detail["has_intermediate_values"]
    assert curves(detail) == {
        n: ("Complete" if n < 3 else "Running", {e: ap50(n, e) for e in range(1, 5 if n < 3 else 3)})
        for n in range(4)}
    # the running trial reports epoch 3: the dashboard shows it within its cache TTL (2 s)
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'optuna.db'}")
    running = optuna.load_study(study_name=STUDY, storage=storage).trials[3]
    storage.set_trial_intermediate_value(running._trial_id, 3, ap50(3, 3))
    storage.engine.dispose()
    deadline = time.monotonic() + 15
    while curves(get_json(f"{dashboard}/api/studies/{sid}"))[3][1].get(3) != ap50(3, 3):
        assert time.monotonic() < deadline, "the new epoch never reached the dashboard"
        time.sleep(0.5)


def test_browser_shows_the_study_and_its_trials(dashboard):
    require_chromium()
    sid = study_id(dashboard)
    with Browser(width=1280, height=2000) as browser:
        browser.open(f"{dashboard}/dashboard")
        browser.wait_for(f"document.body.innerText.includes({STUDY!r})")
        browser.open(f"{dashboard}/dashboard/studies/{sid}")
        text = browser.wait_for("(t => t.includes('Intermediate values') && t.includes('trial #3 (running)')"
                                " && t)(document.body.innerText)")
        assert all(f"trial #{n}" in text for n in range(3))
        browser.screenshot(ARTIFACTS / "optuna-dashboard.png", full_page=False)
        browser.open(f"{dashboard}/dashboard/studies/{sid}/trials")
        text = browser.wait_for("(t => t.includes('Trial 3') && t.includes('Intermediate Values') && t)"
                                "(document.body.innerText)")
        assert "Running" in text and "Complete" in text
        assert browser.console_errors == [], browser.console_errors


def test_refuses_a_directory_without_optuna_db(tmp_path, capsys):
    assert optuna_ui.main([str(tmp_path)]) == 2
    assert "no Optuna database at" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # no empty database was made
    with pytest.raises(FileNotFoundError, match="optuna.db"):
        optuna_ui.study_storage_url(tmp_path / "missing")
    (tmp_path / "optuna.db").touch()
    assert optuna_ui.study_storage_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
