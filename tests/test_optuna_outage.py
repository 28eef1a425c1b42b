"""The study's searcher tells Optuna each trial's end once: it rides over its Optuna database
restarting or dropping its sessions, fails in one line naming the masked URL when the outage
outlasts its limit, creates one trial for an ``ask`` and records a ``tell`` once when the outage
cut their replies, and tells the trial that
uses up a grid."""
import threading

import optuna
import pytest
import sqlalchemy.exc
from postgres import postgres_server

from transcenter.platform.errors import StudyError
from transcenter.platform.optuna_db import open_storage
from transcenter.platform.search import Categorical, SearchSpace, make_searcher
from transcenter.platform.trial_files import TRIAL_NUMBER_KEY

SPACE = SearchSpace({"loss.alpha": Categorical([1.0, 2.0])})
SECRET = "outage-s3cret"


def _result(epoch: int) -> dict:
    return {"epoch": epoch, "AP50": 10.0 * epoch}


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)


def test_a_sqlite_study_database_logs_ahead_and_is_one_file_once_closed(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(storage=storage, study_name="s")
    study.tell(study.ask(), 1.0)
    with storage.engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert (tmp_path / "optuna.db-wal").exists()
    storage.engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db"]
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db").best_value == 1.0


def test_a_tell_whose_reply_was_lost_is_recorded_once(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/optuna.db"
    search = make_searcher(SPACE, {"AP50": "max"}, url, "s", total_epochs=2, sampler="random")
    search.suggest("t1")
    search.on_trial_result("t1", _result(1))
    tell, calls = optuna.Study.tell, []

    def committed_then_cut(study, *args, **kwargs):  # the commit lands, its reply does not
        calls.append(kwargs)
        frozen = tell(study, *args, **kwargs)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, ConnectionError("connection reset"))
        return frozen

    monkeypatch.setattr(optuna.Study, "tell", committed_then_cut)
    search.on_trial_complete("t1", _result(2))
    assert len(calls) == 2 and all(c["skip_if_finished"] for c in calls)
    (trial,) = _trials(url)
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 20.0
    assert trial.intermediate_values == {1: 10.0, 2: 20.0}


def test_an_ask_whose_reply_was_lost_creates_one_trial(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/optuna.db"
    search = make_searcher(SPACE, {"AP50": "max"}, url, "s", total_epochs=1, sampler="random")
    ask, calls = optuna.Study.ask, []

    def committed_then_cut(study, *args, **kwargs):
        calls.append(1)
        trial = ask(study, *args, **kwargs)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, ConnectionError("connection reset"))
        return trial

    monkeypatch.setattr(optuna.Study, "ask", committed_then_cut)
    first = search.suggest("t1")
    second = search.suggest("t2")  # a new trial after the outage is asked for as usual
    assert len(calls) == 2, "the retry took over the trial the cut ask created"
    assert (first[TRIAL_NUMBER_KEY], second[TRIAL_NUMBER_KEY]) == (0, 1)
    for trial_id in ("t1", "t2"):
        search.on_trial_complete(trial_id, _result(1))
    trials = _trials(url)
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.params for t in trials)


@pytest.mark.slow
def test_the_searcher_rides_over_dropped_sessions_and_a_restart():
    with postgres_server(SECRET) as pg:
        search = make_searcher(SPACE, {"AP50": "max"}, pg.url(), "s", total_epochs=3,
                               sampler="random", outage_s=60)
        search.suggest("t1")
        search.on_trial_result("t1", _result(1))
        pg.end_sessions()  # an idle timeout or a failover
        search.on_trial_result("t1", _result(2))
        pg.stop()
        restarting = threading.Event()

        def restart() -> None:
            restarting.set()
            pg.start()
        timer = threading.Timer(10, restart)  # down for 10 s, then as before
        timer.start()
        search.on_trial_complete("t1", _result(3))  # waits for the server
        assert restarting.is_set(), "the end was told while the server was still down"
        timer.join()
        search.suggest("t2")
        search.on_trial_complete("t2", _result(3))
        trials = _trials(pg.url())
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
        assert trials[0].intermediate_values == {1: 10.0, 2: 20.0, 3: 30.0}


@pytest.mark.slow
def test_an_outage_past_the_limit_fails_in_one_line_naming_the_masked_url():
    with postgres_server(SECRET) as pg:
        search = make_searcher(SPACE, {"AP50": "max"}, pg.url(), "s", total_epochs=3,
                               sampler="random", outage_s=3)
        search.suggest("t1")
        pg.stop()
        back = threading.Event()
        timer = threading.Timer(60, back.set)  # the server "returns" only after 60 s
        timer.start()
        with pytest.raises(StudyError, match=r"did not answer for 3 s \(report\).*--resume") as e:
            search.on_trial_result("t1", _result(1))
        assert not back.is_set(), "the searcher waited past its limit"
        timer.cancel()
        assert SECRET not in str(e.value) and pg.url(password="***") in str(e.value)
        pg.start()
        search.on_trial_result("t1", _result(1))  # the same searcher goes on once it is back
        assert _trials(pg.url())[0].intermediate_values == {1: 10.0}


def test_the_study_error_under_tunes_wrapping_is_what_the_driver_reports():
    """Tune re-raises a searcher's error as ``TuneError(traceback)`` inside the ``except`` that
    caught it, and ``Tuner.fit`` raises its own ``TuneError`` from that."""
    from ray.tune.error import TuneError

    from transcenter.platform.study import _study_error

    cause = StudyError("the Optuna database postgresql://u:***@h/db did not answer for 120 s")
    try:
        try:
            try:
                raise cause
            except Exception:
                raise TuneError("Traceback ...")  # noqa: B904 (as Tune raises it)
        except TuneError as inner:
            raise TuneError("The Ray Tune run failed.") from inner
    except TuneError as outer:
        assert _study_error(outer) is cause
    assert _study_error(TuneError("a trial's own error")) is None


def test_the_trial_that_uses_up_a_grid_is_told_complete(tmp_path):
    """Optuna's grid sampler calls ``Study.stop`` after the last point, which raises outside
    ``Study.optimize``; the trial is still told, and nothing reaches Tune."""
    url = f"sqlite:///{tmp_path}/optuna.db"
    search = make_searcher(SPACE, {"AP50": "max"}, url, "s", total_epochs=1, sampler="grid")
    for trial_id in ("t1", "t2"):
        search.suggest(trial_id)
        search.on_trial_complete(trial_id, _result(1))
    assert [t.state for t in _trials(url)] == [optuna.trial.TrialState.COMPLETE] * 2
