"""Every use of a private Ray name, in one place.

Each entry says why the platform needs it and which public API would replace it; an upgrade of
Ray starts here.
"""
from __future__ import annotations


def enable_token_auth_if_token_available() -> None:
    """Turns on token authentication in this process when a token exists and ``RAY_AUTH_MODE`` is
    unset.

    Why: Ray 2.60 does so for ``ray.init("auto")`` but never for an explicit address (argument or
    ``RAY_ADDRESS``, as under ``ray job submit``), and reads ``RAY_AUTH_MODE`` once, at import, so
    setting the variable later is not enough: a cluster started with its default token auth would
    refuse us. Ray's helper also re-reads the config. Public replacement: none yet
    (``ray.init(address=...)`` honouring an existing token would make this unnecessary).
    """
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available)

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def recorded_cluster_address() -> tuple[str | None, str]:
    """Returns ``(address or None, file)``: the cluster the last ``ray start`` recorded in
    ``<RAY_TMPDIR or /tmp>/ray/ray_current_cluster``, which ``ray.init()`` connects to.

    Why: ``ray.init()`` with no address connects to that cluster and, when it is dead, retries for
    minutes without a word; the study checks it first. Public replacement: none
    (``ray.init`` has no connect timeout for a found cluster).
    """
    from ray._common.utils import get_ray_address_file
    from ray._private.utils import read_ray_address

    return read_ray_address(None), get_ray_address_file(None)


def job_working_dir() -> str | None:
    """Returns the current directory when it is Ray's unpacked copy of a job's ``--working-dir``
    (``<session>/runtime_resources/working_dir_files/_ray_pkg_<hash>``), else None.

    Why: a relative storage path there would put the study in Ray's temporary session folder, which
    ``ray stop`` and reboots remove. Public replacement: none (the job's runtime env does not say
    where its working dir was unpacked).
    """
    import os

    cwd = os.getcwd()
    return cwd if f"{os.sep}runtime_resources{os.sep}working_dir_files{os.sep}" in cwd else None
