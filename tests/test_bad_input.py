"""Bad study input gets a clear error naming the thing, before anything starts (no Ray needed)."""
import subprocess
import sys
from pathlib import Path

import pytest

from transcenter.platform.ray_connect import check_reachable
from transcenter.platform.search import Categorical, Float, SearchSpace
from transcenter.platform.study import StudyError, StudySpec, check_study, resume_decided
from transcenter.store.results import ResultStore

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("params, named", [
    ({"model.heatmap_size": Categorical([16, 48])}, "model.heatmap_size.*48.*power of two"),
    ({"loss.alpha": Float(-1.0, 2.0)}, "loss.alpha.*-1.0"),
    ({"loss.gamma": Float(0.0, 1.0)}, "loss.gamma.*unknown config key 'gamma'"),
    ({"matcher.cost_l1": Float(-5.0, -1.0)}, "matcher.cost_l1"),
])
def test_invalid_search_space_is_refused_naming_parameter_and_value(params, named):
    with pytest.raises(ValueError, match=named):
        StudySpec.create(name="bad", space=SearchSpace(params), preset="smoke")


def test_invalid_fixed_override_is_refused():
    with pytest.raises(ValueError, match="data.name"):
        StudySpec.create(name="bad", space=SearchSpace(), overrides={"data.name": "imagenet"})


def test_unwritable_storage_path_is_refused_before_any_trial(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    spec = StudySpec.create(name="s", space=SearchSpace(), storage_path=str(blocker / "results"))
    with pytest.raises(StudyError, match="not writable"):
        check_study(spec)


def test_full_disk_is_refused_before_any_trial(tmp_path):
    spec = StudySpec.create(name="s", space=SearchSpace(), storage_path=str(tmp_path), min_free_gb=1e9)
    with pytest.raises(StudyError, match="GiB free"):
        check_study(spec)


def test_resume_without_a_study_is_refused(tmp_path):
    spec = StudySpec.create(name="s", space=SearchSpace(), storage_path=str(tmp_path), resume=True)
    with pytest.raises(StudyError, match="no study to resume"):
        check_study(spec)


def test_resume_auto_starts_a_new_study_and_continues_a_started_one(tmp_path):
    from transcenter.platform.cli import build_parser, spec_from_args

    args = build_parser("focal_loss", "", asha=False).parse_args(
        ["--storage-path", str(tmp_path), "--name", "s", "--resume", "auto"])
    spec = spec_from_args(args, SearchSpace())
    assert spec.resume == "auto"
    assert resume_decided(spec).resume is False  # nothing there: a new study
    check_study(resume_decided(spec))
    ResultStore(spec.storage_path, spec.name).write_meta({"study": "s"})  # as its start does
    assert resume_decided(spec).resume is True  # the same command again continues it
    check_study(resume_decided(spec))
    assert build_parser("focal_loss", "", asha=False).parse_args(["--resume"]).resume == "yes"
    with pytest.raises(ValueError, match="resume='later'"):
        StudySpec.create(name="s", space=SearchSpace(), resume="later")


@pytest.mark.timeout(60)  # ray.init alone would retry for minutes
def test_ray_address_that_does_not_answer_fails_fast():
    with pytest.raises(StudyError, match="cannot reach the Ray cluster at '127.0.0.1:1'"):
        check_reachable("127.0.0.1:1")


def test_cli_reports_errors_without_a_traceback(tmp_path):
    cmd = [sys.executable, str(REPO / "studies" / "focal_loss.py"), "--storage-path", str(tmp_path),
           "--address", "127.0.0.1:1", "--preset", "smoke"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: cannot reach the Ray cluster" in done.stderr
    assert "Traceback" not in done.stderr


def test_seed_reaches_every_trial_and_seeds_replicate_a_grid(tmp_path):
    from transcenter.platform.cli import build_parser, spec_from_args

    space = SearchSpace({"model.heatmap_size": Categorical([16, 32])})
    args = build_parser("heatmap_size", "", asha=False, seeds=2, sampler="grid").parse_args(
        ["--seed", "7", "--storage-path", str(tmp_path)])
    spec = spec_from_args(args, space)
    assert spec.space.grid() == {"model.heatmap_size": [16, 32], "train.seed": [7, 8]}
    assert spec.samples == 4 and spec.trial_defaults.data.seed == 7
    tpe = build_parser("focal_loss", "", asha=False).parse_args(["--seeds", "2"])
    with pytest.raises(ValueError, match="--seeds 2: .* only for a grid study"):
        spec_from_args(tpe, space)


def test_keep_workers_reaches_the_trials_and_a_negative_one_is_refused(tmp_path):
    from transcenter.platform.cli import build_parser, spec_from_args

    space = SearchSpace({"model.heatmap_size": Categorical([16, 32])})
    parser = build_parser("heatmap_size", "", asha=False, sampler="grid")
    spec = spec_from_args(parser.parse_args(["--storage-path", str(tmp_path)]), space)
    assert spec.resources.keep_workers_s == 5.0
    spec = spec_from_args(parser.parse_args(["--keep-workers", "0", "--storage-path",
                                             str(tmp_path)]), space)
    assert spec.resources.keep_workers_s == 0.0


@pytest.mark.parametrize("flag, value", [
    ("--epochs", "0"), ("--num-samples", "0"), ("--keep-workers", "-1"),
    ("--max-concurrent-trials", "0"), ("--cpus-per-worker", "0"), ("--time-scale", "0"),
    ("--grace-period", "0"), ("--reduction-factor", "1"), ("--seeds", "0"), ("--epochs", "two"),
    ("--min-free-gb", "nan"), ("--progress-every", "0")])
def test_a_numeric_flag_out_of_range_is_refused_naming_it(flag, value, capsys):
    from transcenter.platform.cli import build_parser

    parser = build_parser("heatmap_size", "", asha=False, sampler="grid")
    with pytest.raises(SystemExit) as exited:
        parser.parse_args([flag, value])
    assert exited.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err


def test_set_on_a_searched_field_takes_it_out_of_the_search(tmp_path):
    from transcenter.platform.cli import build_parser, fixed_by_set, spec_from_args

    space = SearchSpace({"model.heatmap_size": Categorical([16, 32]), "loss.alpha": Float(1, 2)})
    args = build_parser("full_search", "", asha=True).parse_args(
        ["--set", "model.heatmap_size=32", "--storage-path", str(tmp_path)])
    spec = spec_from_args(args, space)
    assert list(spec.space.params) == ["loss.alpha"]
    assert spec.trial_defaults.model.heatmap_size == 32
    assert fixed_by_set(args, space)[1] == ["model.heatmap_size=32"]
    assert spec.early_stopping.stratify is None  # the heatmap size is no longer searched
    only = SearchSpace({"model.heatmap_size": Categorical([16, 32])})
    with pytest.raises(ValueError, match="--set model.heatmap_size=32: this study searches only "
                                         "model.heatmap_size"):
        spec_from_args(args, only)


def test_stratify_must_name_a_searched_field(tmp_path):
    space = SearchSpace({"model.heatmap_size": Categorical([16, 32]), "loss.alpha": Float(1, 2)})
    spec = StudySpec.create(name="s", space=space, preset="smoke", asha=True, storage_path=str(tmp_path))
    assert spec.early_stopping.stratify == "model.heatmap_size"  # auto: the heatmap size
    assert StudySpec.create(name="s", space=space, preset="smoke", asha=True, stratify="loss.alpha",
                            storage_path=str(tmp_path)).early_stopping.stratify == "loss.alpha"
    with pytest.raises(ValueError, match="--stratify 'optim.lr': not a parameter this study searches"):
        StudySpec.create(name="s", space=space, preset="smoke", asha=True, stratify="optim.lr")
