"""An object store failing for a while (503s, reset connections, latency) behind a fault proxy:
the study's S3 filesystem retries through it, also after Ray pickles it to another process; pyarrow's
default gives up within seconds; an outage past the retries is an infrastructure fault for the Train
worker (retried from the checkpoint), never the trial's input. The study-level test (checkpoints,
parquet, report through ``ray job submit``) is on the netns cluster (tests/test_cluster.py)."""
import pickle
from collections import Counter

import pyarrow.fs as pafs
import pytest
from fault_proxy import fault_proxy
from s3_server import s3_server

from transcenter.model.data.index import OPTION_FIELDS, DataFingerprint, MissingIndexError, cached_index
from transcenter.platform.disk_full import disk_full_error
from transcenter.platform.worker import failure_line
from transcenter.store import uri
from transcenter.store.results import ResultStore


@pytest.fixture(scope="module")
def s3_behind_proxy():
    with s3_server() as s3, fault_proxy("127.0.0.1", s3.endpoint.removeprefix("http://"),
                                        latency_s=1.0) as proxy:
        yield s3, proxy


@pytest.fixture
def via_proxy(s3_behind_proxy, monkeypatch):
    s3, proxy = s3_behind_proxy
    for key, value in {**s3.env, "AWS_ENDPOINT_URL": proxy.endpoint}.items():
        monkeypatch.setenv(key, value)
    return s3, proxy


# The faults one write meets in turn: 503s, then reset connections, then slow ones (7 failed tries
# of S3_ATTEMPTS); pyarrow's default strategy gives up after 3 tries.
FAULTS = ["503"] * 3 + ["reset"] * 4 + ["slow"] * 2


def test_writes_and_reads_ride_over_an_outage(via_proxy):
    s3, proxy = via_proxy
    store = ResultStore(f"s3://{s3.bucket}/studies", "outage")
    before = Counter(proxy.served)
    proxy.script(FAULTS)
    store.write_meta({"study": "outage"})
    assert store.read_meta() == {"study": "outage"}
    served = proxy.served - before
    assert {mode: served[mode] for mode in ("503", "reset", "slow")} == Counter(FAULTS), served


def test_the_retries_survive_pickling(via_proxy):
    s3, _ = via_proxy
    fs, _ = uri.filesystem(f"s3://{s3.bucket}/studies/pickled")
    copy = pickle.loads(pickle.dumps(fs))  # as Ray hands it to trial actors and Train workers
    assert isinstance(copy, uri.RetryingS3FileSystem) and copy.attempts == uri.S3_ATTEMPTS
    assert pafs.S3FileSystem.__reduce__(copy) == pafs.S3FileSystem.__reduce__(fs)  # same options


def test_pyarrows_default_gives_up_during_the_same_outage(via_proxy):
    """What the retries are for: pyarrow's default strategy fails within seconds of 503s."""
    s3, proxy = via_proxy
    plain, path = pafs.FileSystem.from_uri(f"s3://{s3.bucket}/studies/plain")
    proxy.set_mode("503")
    try:
        with pytest.raises(OSError, match="SLOW_DOWN"), plain.open_output_stream(f"{path}/x") as f:
            f.write(b"lost")
    finally:
        proxy.set_mode("pass")


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_an_outage_past_the_retries_is_an_infrastructure_fault(via_proxy, monkeypatch, tmp_path, mode):
    """A Train worker's first S3 read (its data index) while storage stays down: the error, once the
    retries are spent, is one Ray Train retries, not a missing index or another input error that
    would fail the trial for good."""
    s3, proxy = via_proxy
    monkeypatch.setattr(uri, "S3_ATTEMPTS", 2)  # spent within seconds, as 12 are in about 2 minutes
    index = f"s3://{s3.bucket}/studies/down/data-index.arrow"
    fs, path = uri.filesystem(index)
    with fs.open_output_stream(path) as f:
        f.write(b"an index")
    fingerprint = DataFingerprint(dict.fromkeys(OPTION_FIELDS), ())
    proxy.set_mode(mode)
    try:
        with pytest.raises(OSError) as raised:
            cached_index(index, fingerprint, tmp_path)
    finally:
        proxy.set_mode("pass")
    error = raised.value
    assert not isinstance(error, (MissingIndexError, FileNotFoundError, PermissionError)), error
    assert failure_line(error, 0) is None and disk_full_error(error) is None
