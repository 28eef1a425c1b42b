"""A fresh shell on a machine of its own, for commands a user types (the README's, ``ray start``).

:func:`fresh_shell` runs a bash script as a new user's shell would: ``env -i`` with only ``PATH`` and
``HOME``, the project's ``.venv`` activated. So that its ``ray start`` / ``ray stop`` neither see nor
touch the test session's Ray cluster, it runs in new PID, network and mount namespaces (as root,
like CI): its own loopback-only network, its own process table, and a private folder mounted on
``/tmp/ray``. Killing the returned process by its pid ends every process started inside.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def fresh_shell(script: str, cwd: Path, home: Path, ray_tmp: Path, **popen) -> subprocess.Popen:
    """Starts ``script`` in a fresh shell in ``cwd`` with ``HOME=home`` and ``ray_tmp`` as its
    ``/tmp/ray``; returns the process (stdout and stderr per ``popen``)."""
    home.mkdir(parents=True, exist_ok=True)
    ray_tmp.mkdir(parents=True, exist_ok=True)
    user_shell = (f"env -i PATH={PATH} HOME={shlex.quote(str(home))} bash -c "
                  + shlex.quote(f"source {shlex.quote(str(REPO / '.venv/bin/activate'))} && {script}"))
    setup = (f"ip link set lo up && mkdir -p /tmp/ray && mount --bind {shlex.quote(str(ray_tmp))} "
             f"/tmp/ray && cd {shlex.quote(str(cwd))} && exec {user_shell}")
    return subprocess.Popen(["unshare", "--pid", "--net", "--mount", "--fork", "--mount-proc",
                             "--kill-child", "bash", "-c", setup], text=True, **popen)


def kill(process: subprocess.Popen) -> None:
    """SIGKILLs ``process`` and, with it, every process in its namespaces."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def typed(script: str, cwd: Path, ray_tmp: Path, timeout: float = 600,
          merge: bool = True) -> subprocess.CompletedProcess:
    """Runs ``script`` in a :func:`fresh_shell` in ``cwd`` (``HOME`` is ``cwd/home``) to its end,
    then kills whatever it left; returns its exit status and output (stderr in stdout with
    ``merge``, else apart)."""
    shell = fresh_shell(script, cwd=cwd, home=cwd / "home", ray_tmp=ray_tmp, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT if merge else subprocess.PIPE)
    try:
        out, err = shell.communicate(timeout=timeout)
    finally:
        kill(shell)
    return subprocess.CompletedProcess(script, shell.returncode, out, err)
