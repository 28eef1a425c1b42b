"""Checks that a study's storage can be written, from the study driver and, as a Ray task, from
every node; this module imports neither the model nor the driver's code, so a node's probe starts
in about a second."""
from __future__ import annotations

import shutil
import uuid

from transcenter.platform.errors import StudyError
from transcenter.platform.ray_connect import answers
from transcenter.store import uri
from transcenter.store.uri import read_text


def check_writable(directory: str, min_free_gb: float = 0.0) -> None:
    """Creates ``directory``, writes/removes a probe file and, for local storage, checks that
    ``min_free_gb`` GiB are free; raises :class:`StudyError` naming the path otherwise (within
    seconds for an object store whose endpoint does not answer)."""
    endpoint = uri.object_store_endpoint(directory)
    if endpoint and not answers(endpoint):
        raise StudyError(f"storage path {uri.mask(directory)!r}: the object store at {endpoint} "
                         f"does not answer")
    try:
        fs, path = uri.filesystem(directory)
        fs.create_dir(path, recursive=True)
        probe = f"{path}/.write-probe-{uuid.uuid4().hex}"
        with fs.open_output_stream(probe) as f:
            f.write(b"x" * 4096)
        fs.delete_file(probe)
    except (OSError, ValueError) as e:
        raise StudyError(f"storage path {uri.mask(directory)!r} is not writable: {uri.mask(str(e))}") from e
    if uri.is_local(directory):
        free_gb = shutil.disk_usage(uri.local_path(directory)).free / 2**30
        if free_gb < min_free_gb:
            raise StudyError(f"storage path {directory!r} has {free_gb:.2f} GiB free, less than "
                             f"the {min_free_gb} GiB a study needs (--min-free-gb)")



def probe_storage(marker: str) -> str | None:
    """Returns why this node does not see the driver's ``marker`` file or cannot write beside
    it, or None."""
    try:
        if read_text(marker) is None:
            return ("the driver's files are not there (a folder local to the driver's machine? "
                    "use shared storage such as s3://)")
        check_writable(marker.rsplit("/", 1)[0])
    except (StudyError, OSError) as e:
        return uri.mask(str(e))
    return None
