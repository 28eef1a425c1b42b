"""Object storage a study cannot use is refused up front, before Ray starts, naming the storage
path and never printing a secret: an endpoint that does not answer, wrong credentials, a missing
bucket, credentials written into the URI. Against a real S3 server (moto's). Each study run has a
subprocess timeout, so a check that hangs fails the test instead of stalling the suite; how fast
the refusal comes is a matter for the benchmarks (tests/bench/), not for these tests."""
import subprocess
import sys

import pytest
from isolated import REPO
from s3_server import s3_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


def _study(storage: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "studies" / "heatmap_size.py"), "--preset", "smoke",
         "--storage-path", storage, "--optuna-url", f"sqlite:///{tmp_path}/optuna.db"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env}, capture_output=True,
        text=True, timeout=120)


def test_an_endpoint_that_does_not_answer(s3, tmp_path):
    done = _study(f"s3://{s3.bucket}/studies", {**s3.env, "AWS_ENDPOINT_URL": "http://127.0.0.1:1"},
                  tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "the object store at 127.0.0.1:1 does not answer" in done.stderr
    assert s3.secret_key not in done.stdout + done.stderr


def test_wrong_credentials(s3, tmp_path):
    wrong = "Wr0ng-" + s3.secret_key
    done = _study(f"s3://{s3.bucket}/studies", {**s3.env, "AWS_SECRET_ACCESS_KEY": wrong}, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: storage path 's3://{s3.bucket}/studies/heatmap_size' is not writable" in done.stderr
    assert wrong not in done.stdout + done.stderr and s3.secret_key not in done.stdout + done.stderr


def test_a_missing_bucket(s3, tmp_path):
    done = _study("s3://no-such-bucket/studies", s3.env, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "storage path 's3://no-such-bucket/studies/heatmap_size' is not writable" in done.stderr
    assert "no-such-bucket" in done.stderr.split("is not writable", 1)[1]


def test_credentials_in_the_uri_are_refused_masked(s3, tmp_path):
    done = _study(f"s3://{s3.access_key}:{s3.secret_key}@{s3.bucket}/studies", s3.env, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "credentials in the URI would be stored" in done.stderr
    assert s3.secret_key not in done.stdout + done.stderr
