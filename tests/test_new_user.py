"""What broke for a new user on the way to a cluster, each reproduced as the user met it:
checkpoints in Ray's temporary folder, a dead cluster that hung every later study, a password in
the output, and a study whose every trial failed but that exited 0 after retrying the mistake."""
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy
from browser import get_json, optuna_dashboard
from isolated import REPO, fresh_shell, kill
from postgres import postgres_server
from test_data import make_voc

from transcenter.model.data.common import ImageError, read_image
from transcenter.platform.search import Categorical, SearchSpace
from transcenter.platform.study import StudySpec, run_study
from transcenter.store.uri import mask

pytestmark = pytest.mark.slow
TINY = ["--preset", "smoke", "--num-samples", "1", "--epochs", "1",
        "--set", "data.num_train=8", "--set", "data.num_val=4"]
SECRET = "Sekr1t-Pa55word"


def _study(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "studies" / "heatmap_size.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.mark.ray
def test_default_relative_storage_path_keeps_every_file_under_the_study(ray_cluster, tmp_path,
                                                                         monkeypatch):
    """Before: checkpoints went to <ray session>/artifacts/.../working_dirs/<trial>/results/."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    name = f"relative_{tmp_path.name}"
    spec = StudySpec.create(name=name, space=SearchSpace({"model.heatmap_size": Categorical([16])}),
                            sampler="grid", preset="smoke",
                            overrides={"data.num_train": 8, "data.num_val": 4, "train.epochs": 2})
    run_study(spec)
    study = elsewhere / "results" / name
    assert sorted(p.name for p in study.iterdir()) == ["costs", "epochs", "logs", "optuna.db",
                                                       "study.json", "train", "trials", "tune"]
    meta = json.loads((study / "study.json").read_text())
    assert meta["search_space"] == {"model.heatmap_size": {"type": "categorical", "values": [16]}}
    assert len(list((study / "train").glob("*/checkpoint_*/checkpoint.pt"))) == 1
    strays = list(Path("/tmp/ray").glob(f"session_*/artifacts/**/{name}"))
    assert strays == [], f"study files outside the storage path: {strays}"


@pytest.mark.timeout(300)  # before the fix, ray.init retried the dead head for over 8 minutes
def test_a_head_killed_by_sigkill_does_not_hang_the_next_local_study(tmp_path):
    ray_tmp = tmp_path / "ray"  # /tmp/ray of both shells: the dead head's record stays there
    head = fresh_shell("ray start --head --port=6379 --num-cpus=1 --include-dashboard=false "
                       "--disable-usage-stats >/dev/null 2>&1 && echo started && sleep infinity",
                       cwd=tmp_path, home=tmp_path / "home", ray_tmp=ray_tmp,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert head.stdout.readline().strip() == "started"
    finally:
        kill(head)  # SIGKILL: every process of that head dies without `ray stop`
    assert (ray_tmp / "ray_current_cluster").read_text().strip().endswith(":6379")

    work = tmp_path / "work"
    work.mkdir()
    shell = fresh_shell(f"python {REPO}/studies/heatmap_size.py " + " ".join(TINY) + " --no-report",
                        cwd=work, home=tmp_path / "home", ray_tmp=ray_tmp,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = shell.communicate(timeout=280)[0]
    finally:
        kill(shell)
    assert shell.returncode == 0, out[-4000:]
    assert "ray_current_cluster" in out and "does not answer: starting a fresh local Ray" in out
    assert "trials: 1 completed" in out
    assert len(pd.read_parquet(work / "results" / "heatmap_size" / "epochs")) == 1


def _files_containing(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.ray
def test_optuna_password_is_never_printed_or_stored(ray_cluster, tmp_path):
    with postgres_server(SECRET) as pg:
        # A database that refuses the login, or does not answer, is refused up front, masked.
        for bad, reason in ((pg.url(password="wrong-" + SECRET), "password authentication failed"),
                            (pg.url().replace(str(pg.port), "1"), "Connection refused")):
            done = _study(*TINY, "--storage-path", str(tmp_path / "refused"), "--optuna-url", bad,
                          "--address", ray_cluster.address, cwd=tmp_path)
            assert done.returncode == 2
            assert f"error: the Optuna database {mask(bad)} cannot be opened" in done.stderr
            assert reason in done.stderr and "Traceback" not in done.stderr
            assert SECRET not in done.stdout + done.stderr

        storage = tmp_path / "results"
        done = _study(*TINY, "--storage-path", str(storage), "--optuna-url", pg.url(),
                      "--address", ray_cluster.address, cwd=tmp_path)
        assert done.returncode == 0, f"{done.stderr[:3000]}\n...\n{done.stderr[-3000:]}"
        assert f"optuna-dashboard {pg.url(password='***')}" in done.stdout
        assert SECRET not in done.stdout + done.stderr
        assert _files_containing(storage, SECRET.encode()) == []  # parquet, tune state, report
        logs = Path("/tmp/ray/session_latest/logs")
        assert _files_containing(logs.resolve(), SECRET.encode()) == []

        study = optuna.load_study(study_name="heatmap_size", storage=pg.url())
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
        assert SECRET not in _database_text(pg.url())  # every table: attrs, params, values

        # `make dashboard STUDY=<the URL>`: optuna-dashboard serves the study from PostgreSQL.
        with optuna_dashboard(pg.url()) as dashboard:
            studies = get_json(f"{dashboard}/api/studies")["study_summaries"]
            assert [s["study_name"] for s in studies] == ["heatmap_size"]


def _database_text(url: str) -> str:
    """Returns the text of every row of every table of the database at ``url``."""
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        tables = sqlalchemy.inspect(connection).get_table_names()
        assert "trial_user_attributes" in tables  # Optuna's schema
        return repr([connection.exec_driver_sql(f"SELECT * FROM {t}").all() for t in tables])


def test_a_bad_data_root_is_refused_before_ray_starts(tmp_path):
    """Before: 6 trials each failed 3 times (Train retries, 142 s) on a VOC folder without
    splits. Now the driver opens the data set first and refuses it with the loader's one line."""
    data_root = tmp_path / "VOCdevkit"
    (data_root / "VOC2007").mkdir(parents=True)  # no Annotations/, no ImageSets/
    done = subprocess.run(
        [sys.executable, str(REPO / "studies" / "overlap.py"), "--data", "voc",
         "--data-root", str(data_root), "--preset", "smoke", "--storage-path", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=300,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode == 2, done.stderr[-4000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: data: data.root '{data_root}' is not a VOC-layout folder: expected "
                      f"VOCdevkit/VOC<year>/, VOC<year>/ or a folder with Annotations/, JPEGImages/ "
                      f"and ImageSets/Main/ (found ['VOC2007'])"], done.stderr[-4000:]
    assert "Traceback" not in done.stderr and "Started a local Ray instance" not in done.stderr


def test_a_corrupt_jpeg_is_one_plain_line_naming_the_file(tmp_path):
    """Before: the driver announced ``{'corrupt_image': 1}`` naming no file, and a worker later
    logged it with torchvision's C++ source location and colour codes."""
    objects = {f"{i:03d}": [("cat", 1, 1, 10, 20, 0)] for i in range(6)}
    year = make_voc(tmp_path / "voc", objects)
    make_voc(tmp_path / "voc", objects, split="test")
    broken = year / "JPEGImages" / "003.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    done = subprocess.run(  # refused after the data check: nothing answers at the address
        [sys.executable, str(REPO / "studies" / "heatmap_size.py"), "--data", "voc", "--data-root",
         str(tmp_path / "voc"), "--preset", "smoke", "--storage-path", str(tmp_path / "results"),
         "--address", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=300,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode == 2 and "error: cannot reach the Ray cluster" in done.stderr
    named = [line for line in (done.stdout + done.stderr).splitlines() if "003.jpg" in line]
    assert len(named) == 2 and all(line.endswith(f"data: {broken}: corrupt image ({split} split; "
                                                 f"the trials skip it)")
                                   for line, split in zip(named, ("train", "val"))), named
    assert "{'corrupt_image'" not in done.stderr and "\x1b" not in done.stderr
    assert "study heatmap_size:" not in done.stdout  # no banner before a refusal
    with pytest.raises(ImageError) as error:
        read_image(broken)
    assert str(error.value) == f"{broken}: cannot decode image (Image is incomplete or truncated)"


def test_boxes_outside_their_image_are_named_as_written_in_the_annotation_file(tmp_path):
    """Before: a box wholly outside was skipped as ``zero_area_box`` with clipped coordinates and
    the JPEG's name; a partly outside one was counted naming no file; ``inspect`` showed neither."""
    objects = {"good": [("cat", 1, 1, 10, 20, 0)], "partly": [("cat", -4, 3, 80, 20, 0)],
               "away": [("cat", 60, 45, 90, 70, 0), ("dog", 2, 2, 12, 12, 0)]}
    year = make_voc(tmp_path / "voc", objects)
    make_voc(tmp_path / "voc", objects, split="test")
    done = subprocess.run(
        [sys.executable, "-m", "transcenter.model.data.inspect", "--data", "voc", "--data-root",
         str(tmp_path / "voc"), "--input-size", "64"],
        capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    away = year / "Annotations" / "away.xml"
    assert (f"skipped 1 (outside_image): {away}: 1 box(es) outside the (H, W) = (40, 50) image: "
            f"<bndbox> xmin=60 ymin=45 xmax=90 ymax=70") in done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("train ", "val "))
            and "clipped" not in line and "outside_image:" in line]
    assert len(rows) == 2 and all(f"({year / 'Annotations' / 'partly.xml'})" in row for row in rows)


@pytest.mark.parametrize("flags, refusal", [
    (("--num-samples", "0"), "argument --num-samples: must be >= 1, got '0'"),
    (("--epochs", "0"), "argument --epochs: must be >= 1, got '0'"),
    (("--set", "model.heatmap_size=32"), "--set model.heatmap_size=32: this study searches only "
                                         "model.heatmap_size; with --set fixing it there is nothing left to search"),
])
def test_an_input_that_cannot_do_what_it_says_is_refused_before_anything_starts(tmp_path, flags, refusal):
    done = _study("--preset", "smoke", *flags, "--storage-path", str(tmp_path / "r"),
                  cwd=tmp_path, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode == 2 and refusal in done.stderr, done.stderr
    assert not (tmp_path / "r").exists() and "Traceback" not in done.stderr
    assert done.stdout == ""  # no banner naming paths that will never exist
