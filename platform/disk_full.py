"""A Train worker whose node ran out of local disk: what to tell the user, and what to do.

Checkpoints are written to the worker node's temporary folder before Ray Train uploads them, and
the data index is copied there, so a full disk on one node fails every trial placed on it. The
worker names the node, the folder and what is left of it, drains the node
(:func:`~transcenter.platform.compat.drain_this_node`: no new trial starts there) and raises a
:class:`NodeDiskFull`, an infrastructure fault: Ray Train retries the trial from its last
checkpoint on another node.
"""
from __future__ import annotations

import errno
import shutil
import tempfile

from transcenter.platform.errors import raised_from

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class NodeDiskFull(RuntimeError):
    """A worker's node has no disk space left; the message names the node and the folder."""


def disk_full_error(error: BaseException) -> OSError | None:
    """Returns the ``OSError`` "no space left on device" (or "disk quota exceeded") that ``error``
    is or was raised from (checkpoint and storage libraries wrap it), else None."""
    return raised_from(error, lambda e: isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS)


def describe(error: OSError, node: str) -> str:
    """Returns one line: the node, the file that could not be written, and the space left (MB)
    in the node's temporary folder."""
    folder = tempfile.gettempdir()
    try:
        usage = shutil.disk_usage(folder)
        space = f"{usage.free / 2**20:.0f} of {usage.total / 2**20:.0f} MB free in {folder}"
    except OSError as e:
        space = f"{folder}: {e.strerror}"
    where = f" writing {error.filename}" if error.filename else ""
    return f"node {node}: disk full ({error.strerror}{where}; {space})"
