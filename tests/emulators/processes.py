"""Stopping a server subprocess the way an orchestrator would: SIGINT, a grace period, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess


def stop_gracefully(process: subprocess.Popen, grace_seconds: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
