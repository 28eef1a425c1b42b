"""Simulated trials: the surrogate learning curves, a simulated TPE + ASHA study through
the real Tune, Optuna searcher, ASHA and result store, and the simulated-time loop deciding as the
real-time study does."""
import math

import optuna
import pandas as pd
import pytest
from local_cluster import trial_actors

from transcenter.platform.search import Categorical, Float, SearchSpace
from transcenter.platform.simulate import SimulationSpec, Surrogate
from transcenter.platform.simulated_time import run_simulated_time
from transcenter.platform.study import StudySpec, run_study
from transcenter.store.metric_names import AP_KEYS, COST_KEYS, EXTRA_KEYS, LOSS_KEYS

SPACE = SearchSpace({"loss.alpha": Float(0.5, 4.0), "optim.lr": Float(1e-5, 1e-2, log=True),
                     "model.heatmap_size": Categorical([16, 32, 64, 128]),
                     "loss.bg_weight_mode": Categorical(["paper", "single"])})


def test_the_optimum_has_the_best_final_ap50_and_curves_rise_to_it():
    curves = Surrogate(SPACE.describe(), noise=0.0)
    best = curves.optimum()
    assert curves.quality(best) > 0.99  # categoricals: the nearest value
    worse = {**best, "loss.alpha": 0.5, "optim.lr": 1e-2}
    final = {name: curves.metrics(p, 30)["AP50"] for name, p in (("best", best), ("worse", worse))}
    assert final["best"] > final["worse"] + 5
    ap50 = [curves.metrics(best, e)["AP50"] for e in range(1, 31)]
    assert ap50 == sorted(ap50) and ap50[0] < ap50[-1]


def test_a_configuration_replays_the_same_curve_and_noise_follows_the_seed():
    params = {"loss.alpha": 2.0, "optim.lr": 1e-3, "model.heatmap_size": 64,
              "loss.bg_weight_mode": "single"}
    a, b = Surrogate(SPACE.describe(), seed=0), Surrogate(SPACE.describe(), seed=1)
    assert [a.metrics(params, e) for e in (1, 2)] == [a.metrics(params, e) for e in (1, 2)]
    assert a.metrics(params, 2)["AP50"] != b.metrics(params, 2)["AP50"]


def test_metrics_carry_every_name_a_real_trial_reports_and_the_epoch_time_grows_with_s():
    curves = Surrogate(SPACE.describe())
    small, large = ({"model.heatmap_size": s} for s in (32, 128))
    m = curves.metrics(small, 1)
    assert set(AP_KEYS + LOSS_KEYS + EXTRA_KEYS + COST_KEYS + ("epoch", "time_s")) <= set(m)
    assert all(math.isfinite(v) for v in m.values())
    assert curves.metrics(large, 1)["time_s"] > m["time_s"]
    assert curves.metrics(large, 1)["gmacs"] > m["gmacs"]


@pytest.mark.parametrize("bad, message", [({"source": ""}, "give 'surrogate'"),
                                          ({"time_scale": 0}, "--time-scale")])
def test_a_bad_simulation_is_refused_naming_the_flag(bad, message):
    with pytest.raises(ValueError, match=message):
        SimulationSpec(**{"source": "surrogate", "space": SPACE.describe(), "epochs": 3, **bad})


def test_a_folder_without_a_study_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match=f"--simulate {tmp_path}: the study has no epoch rows"):
        StudySpec.create(name="s", space=SPACE, preset="smoke", storage_path=str(tmp_path / "out"),
                         simulate=str(tmp_path))


@pytest.mark.ray
def test_a_simulated_tpe_asha_study_runs_through_the_real_stack(ray_cluster, tmp_path):
    trials, epochs = 16, 6
    spec = StudySpec.create(name="sim", space=SPACE, sampler="tpe", asha=True, preset="smoke",
                            num_samples=trials, overrides={"train.epochs": epochs},
                            max_concurrent_trials=4, storage_path=str(tmp_path),
                            simulate="surrogate", time_scale=10_000)
    before = {a.actor_id for a in trial_actors()}
    store = run_study(spec)
    # Trials end faster than a trial actor starts. Each trial's share of the head node's resource
    # keeps the actors to the 4 that run at once, so a new trial waits for an idle actor instead of
    # starting a process that Tune would discard (without the share: 13 actor processes).
    started = [a for a in trial_actors() if a.actor_id not in before and a.pid]
    assert len(started) <= 2 * 4, [(a.pid, a.state) for a in started]
    rows, stored = store.read_epochs(), store.read_trials()
    assert len(stored) == trials and not rows.duplicated(["trial_id", "epoch"]).any()
    assert set(rows["device"]) == {"simulated (surrogate)"}  # a row says what ran
    study = optuna.load_study(study_name="sim", storage=f"sqlite:///{tmp_path}/sim/optuna.db")
    states = pd.Series([t.state.name for t in study.trials]).value_counts().to_dict()
    assert sum(states.values()) == trials and states.get("PRUNED", 0) > 0, states
    curves = spec.simulation.curves()
    for t in study.trials:  # Optuna holds exactly the epochs parquet holds, with the curve's values
        got = rows[rows.trial_id == f"trial-{t.number:05d}"].sort_values("epoch")
        assert sorted(t.intermediate_values) == list(got["epoch"])
        expected = [curves.metrics(t.params, e)["AP50"] for e in got["epoch"]]
        assert got["AP50"].tolist() == pytest.approx(expected)
    full = stored.set_index("trial_id")["status"]
    assert (rows.groupby("trial_id")["epoch"].max()[full == "completed"] == epochs).all()
    # Tune writes none of its own per-trial files for simulated trials: parquet has the rows.
    tune_files = {p.name for p in (tmp_path / "sim" / "tune").rglob("*") if p.is_file()}
    assert not {"progress.csv", "result.json"} & tune_files
    assert not any(name.startswith("events.out.tfevents") for name in tune_files)


@pytest.mark.ray
def test_simulated_time_decides_as_the_real_time_study_does(ray_cluster, tmp_path):
    """One trial at a time, seeded TPE past its random start-up, ASHA: the discrete-event loop
    suggests the same configurations and stops the same trials at the same epochs as Tune does."""
    trials, epochs = 14, 5
    spec = StudySpec.create(name="realtime", space=SPACE, sampler="tpe", asha=True, preset="smoke",
                            num_samples=trials, overrides={"train.epochs": epochs},
                            max_concurrent_trials=1, storage_path=str(tmp_path / "real"),
                            simulate="surrogate", time_scale=10_000)
    rows = run_study(spec).read_epochs()
    real = {key: (dict(zip(SPACE.params, group.iloc[0][list(SPACE.params)])),
                  int(group["epoch"].max())) for key, group in rows.groupby("trial_id")}
    sim = run_simulated_time(SPACE, spec.objective_modes, spec.simulation, trials, slots=1,
                             storage_url=f"sqlite:///{tmp_path}/simulated.db",
                             study_name="simulated", sampler="tpe", seed=spec.seed,
                             stopping=spec.early_stopping)
    simulated = {t.key: (t.params, t.epochs) for t in sim.trials}
    assert simulated == real
    assert {e for _, e in real.values()} != {epochs}  # ASHA stopped some trials
    assert sim.wall_s == pytest.approx(sim.busy_s)  # one slot: always busy
