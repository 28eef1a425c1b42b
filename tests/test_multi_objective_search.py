"""The study's searcher with several objectives, driven the way Tune drives it, without
a Ray cluster: Optuna's directions, per-epoch values as user attributes, constraints, PRUNED."""
import optuna
import pytest

from transcenter.platform.search import Categorical, Constraint, SearchSpace, make_searcher
from transcenter.platform.study import StudySpec

SPACE = SearchSpace({"model.heatmap_size": Categorical([16, 32])})


def test_constraint_parsing_and_violation():
    c = Constraint.parse("gmacs<=50")
    assert (c.metric, c.op, c.bound, str(c)) == ("gmacs", "<=", 50.0, "gmacs<=50")
    assert c.violation(40.0) == -10.0 and c.violation(55.0) == 5.0
    assert Constraint.parse("AP >= 30").violation(25.0) == 5.0
    for bad in ("gmacs<50", "gmacs<=lots", "<=3"):
        with pytest.raises(ValueError, match="--constraint"):
            Constraint.parse(bad)


def test_objectives_are_validated_by_name_and_direction(tmp_path):
    spec = StudySpec.create(name="mo", space=SPACE, objectives=("AP:max", "gmacs:min"), storage_path=str(tmp_path))
    assert spec.objective_modes == {"AP": "max", "gmacs": "min"}
    assert StudySpec.create(name="so", space=SPACE, storage_path=str(tmp_path)).objective_modes == {"AP50": "max"}
    with pytest.raises(ValueError, match="'speed': not a metric"):
        StudySpec.create(name="mo", space=SPACE, objectives=("speed:max",), storage_path=str(tmp_path))
    with pytest.raises(ValueError, match="--objective 'AP:up'"):
        StudySpec.create(name="mo", space=SPACE, objectives=("AP:up",), storage_path=str(tmp_path))
    with pytest.raises(ValueError, match="--sampler 'cmaes'"):
        StudySpec.create(name="mo", space=SPACE, sampler="cmaes", storage_path=str(tmp_path))


@pytest.mark.parametrize("sampler", ["tpe", "mtpe", "nsga2", "random"])
def test_multi_objective_searcher_keeps_every_epoch_constraints_and_prunes(tmp_path, sampler):
    url = f"sqlite:///{tmp_path}/optuna.db"
    search = make_searcher(SPACE, {"AP": "max", "gmacs": "min"}, url, "mo", total_epochs=3,
                           sampler=sampler, constraints=(Constraint.parse("gmacs<=0.2"),))
    for trial_id, gmacs, last_epoch in (("a", 0.1, 3), ("b", 0.3, 1)):
        assert search.suggest(trial_id)["model.heatmap_size"] in (16, 32)
        for epoch in range(1, last_epoch + 1):
            result = {"epoch": epoch, "AP": 10.0 * epoch, "gmacs": gmacs}
            search.on_trial_result(trial_id, result)
        search.on_trial_complete(trial_id, result)
    study = optuna.load_study(study_name="mo", storage=url)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["AP", "gmacs"]  # what optuna-dashboard labels them
    a, b = study.trials
    assert a.state == optuna.trial.TrialState.COMPLETE and a.values == [30.0, 0.1]
    assert {k: v for k, v in a.user_attrs.items() if "@" in k} == {
        "AP@1": 10.0, "gmacs@1": 0.1, "AP@2": 20.0, "gmacs@2": 0.1, "AP@3": 30.0, "gmacs@3": 0.1}
    assert b.state == optuna.trial.TrialState.PRUNED and b.user_attrs["AP@1"] == 10.0  # stopped at 1 of 3
    assert a.constraints == {"gmacs<=0.2": pytest.approx(-0.1)}
    assert b.constraints == {"gmacs<=0.2": pytest.approx(0.1)}
    assert [t.number for t in study.best_trials] == [0]


def test_a_single_objective_study_is_named_after_its_metric_also_when_resumed(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    for _ in range(2):  # created, then loaded again as a resumed study is
        make_searcher(SPACE, {"AP50": "max"}, url, "so", total_epochs=2)
        assert optuna.load_study(study_name="so", storage=url).metric_names == ["AP50"]


def test_mtpe_is_optunas_tpe_with_one_model_of_all_parameters(tmp_path):
    from transcenter.platform.compat import optuna_study

    url = f"sqlite:///{tmp_path}/optuna.db"
    for name, multivariate in (("tpe", False), ("mtpe", True)):
        sampler = optuna_study(make_searcher(SPACE, {"AP50": "max"}, url, name, total_epochs=2,
                                             sampler=name)).sampler
        assert isinstance(sampler, optuna.samplers.TPESampler)
        assert sampler._multivariate is multivariate
