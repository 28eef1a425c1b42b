"""A full disk under a worker: the checkpoint's failure names its cause, and the worker's message
names the node and the space left. The study-level behaviour (the node drained, the trial moved to
another node) is tested on the netns cluster (tests/test_cluster.py)."""
import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

from transcenter.model.training.checkpoint import save_checkpoint
from transcenter.platform.disk_full import describe, disk_full_error


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 1 MB tmpfs mounted at a fresh folder (needs root, as CI has)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_checkpoint_on_a_full_disk_fails_naming_no_space_left(small_disk):
    with pytest.raises(RuntimeError) as raised:  # torch's own error names no cause
        save_checkpoint({"w": torch.zeros(1_000_000)}, small_disk / "checkpoint.pt")
    full = disk_full_error(raised.value)
    assert full is not None and full.errno == errno.ENOSPC
    assert not (small_disk / "checkpoint.pt").exists()  # nothing torn in place


def test_other_errors_are_not_a_full_disk():
    assert disk_full_error(RuntimeError("NCCL timeout")) is None
    assert disk_full_error(FileNotFoundError(errno.ENOENT, "missing", "/x")) is None
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", "/scratch/x")
        except OSError as e:
            raise RuntimeError("upload failed") from e
    except RuntimeError as e:
        assert disk_full_error(e).errno == errno.EDQUOT


def test_the_message_names_the_node_the_file_and_the_space_left(monkeypatch, small_disk):
    monkeypatch.setenv("TMPDIR", str(small_disk))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    message = describe(OSError(errno.ENOSPC, "No space left on device", "/scratch/ckpt.pt"), "10.0.0.7")
    assert message.startswith("node 10.0.0.7: disk full (No space left on device writing "
                              "/scratch/ckpt.pt; ")
    assert message.endswith(f"of 1 MB free in {small_disk})")
