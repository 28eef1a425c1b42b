"""Stopping what a test started, by its pid."""
from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, grace_s: float = 10) -> None:
    """Terminates ``process``, and kills it if it has not exited after ``grace_s`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)
