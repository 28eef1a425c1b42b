"""Storage locations and URL secrets: resolution, masking, and where a password may go."""
import dataclasses
import os

import pytest

from transcenter.platform.optuna_db import split_password, use_password
from transcenter.platform.search import SearchSpace
from transcenter.platform.study import StudySpec
from transcenter.store import uri


@pytest.mark.parametrize("text, masked", [
    ("postgresql+psycopg://user:PA55@db.example:5432/optuna",
     "postgresql+psycopg://user:***@db.example:5432/optuna"),
    ("live: optuna-dashboard postgresql://u:p@ss@h/db | x", "live: optuna-dashboard postgresql://u:***@h/db | x"),
    ("s3://KEY:SECRET@bucket/studies", "s3://KEY:***@bucket/studies"),
    ("'s3://AKIA:Wg45A+S03g/3WMB1@studies/x' due to", "'s3://AKIA:***@studies/x' due to"),
    ("sqlite:////tmp/results/s/optuna.db", "sqlite:////tmp/results/s/optuna.db"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
])
def test_mask_hides_every_password(text, masked):
    assert uri.mask(text) == masked


def test_a_spec_keeps_a_postgres_password_apart_and_leaves_the_environment_alone(monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = "postgresql+psycopg://tc:p%40ss@127.0.0.1:5432/studies?sslmode=disable"
    specs = [StudySpec.create(name="s", space=SearchSpace(), preset="smoke", optuna_url=url) for _ in range(2)]
    assert "PGPASSWORD" not in os.environ
    assert specs[0].optuna_url == "postgresql+psycopg://tc@127.0.0.1:5432/studies?sslmode=disable"
    assert specs[0].optuna_password == "p@ss" and "p@ss" not in repr(specs[0])
    use_password(specs[0].optuna_password)  # what run_study does before it opens the database
    assert os.environ["PGPASSWORD"] == "p@ss"
    assert uri.display(specs[0].optuna_url) == ("postgresql+psycopg://tc:***@127.0.0.1:5432/studies"
                                                "?sslmode=disable")


def test_password_of_another_database_is_refused_masked():
    with pytest.raises(ValueError, match=r"mysql://u:\*\*\*@h/db") as e:
        split_password("mysql://u:hunter2@h/db")
    assert "hunter2" not in str(e.value)


def test_relative_storage_path_is_resolved_once_where_the_study_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = StudySpec.create(name="s", space=SearchSpace(), preset="smoke", storage_path="results")
    assert spec.storage_path == str(tmp_path / "results")
    monkeypatch.chdir("/")
    assert spec.storage_path == str(tmp_path / "results")  # the trial's directory does not matter


def test_relative_storage_path_in_a_job_working_dir_copy_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with pytest.raises(ValueError, match=r"--storage-path 'results' is relative.*\$PWD/results"):
        StudySpec.create(name="s", space=SearchSpace(), preset="smoke", storage_path="results")
    absolute = StudySpec.create(name="s", space=SearchSpace(), preset="smoke", storage_path=str(tmp_path))
    assert absolute.storage_path == str(tmp_path)


def test_the_constructor_refuses_what_create_would_have_resolved(tmp_path):
    with pytest.raises(ValueError, match=r"storage_path 'results': must be an absolute path or a URI"):
        StudySpec(name="s", space=SearchSpace(), preset="smoke", storage_path="results")
    url = "postgresql+psycopg://tc:p%40ss@127.0.0.1:5432/studies"
    with pytest.raises(ValueError, match=r"--optuna-url postgresql\+psycopg://tc:\*\*\*@.*holds a password") as e:
        StudySpec(name="s", space=SearchSpace(), preset="smoke", storage_path=str(tmp_path),
                  optuna_url=url)
    assert "p%40ss" not in str(e.value)
    spec = StudySpec.create(name="s", space=SearchSpace(), preset="smoke", storage_path="results",
                            optuna_url=url)
    assert dataclasses.replace(spec, seed=1).optuna_password == "p@ss"  # a resolved spec rebuilds
