"""``leadscore worker --processes N``: N worker processes on one machine, in one consumer
group, so a worker bound to one core (Python) uses several. The parent creates the topics
once, starts the children (each serves /healthz and /metrics on its own port:
``LEADSCORE_WEB_PORT`` + its number), forwards SIGTERM/SIGINT to them and waits.

A child that exits on its own (a crash) is started again, at most
:data:`MAX_RESTARTS_PER_MINUTE` times a minute; past that the parent stops all and exits
non-zero, so that whatever runs it (systemd, Kubernetes) sees the failure.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from ..kafka import ensure_topics
from ..settings import Settings

log = logging.getLogger("leadscore.supervisor")

#: Crash restarts allowed per minute (all children together) before giving up.
MAX_RESTARTS_PER_MINUTE = 5
#: How long the parent waits for its children after forwarding a stop.
STOP_WAIT_S = 60.0


def run_processes(settings: Settings, processes: int) -> int:
    """Run ``processes`` workers until SIGTERM/SIGINT; returns the exit code."""
    ensure_topics(settings)
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(number: int) -> None:
        env = dict(os.environ)
        port = settings.web_port
        env["LEADSCORE_WEB_PORT"] = str(port + number if port else 0)
        children[number] = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], env=env, stdin=subprocess.DEVNULL
        )
        log.info(
            "worker %d started (pid %d, web port %s)",
            number,
            children[number].pid,
            env["LEADSCORE_WEB_PORT"],
        )

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for number in range(processes):
        start(number)
    restarts: list[float] = []
    code = 0
    while not stopping:
        time.sleep(0.5)
        for number, child in list(children.items()):
            status = child.poll()
            if status is None or stopping:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > MAX_RESTARTS_PER_MINUTE:
                log.error(
                    "worker %d exited (%d); more than %d restarts in a minute: stopping all",
                    number,
                    status,
                    MAX_RESTARTS_PER_MINUTE,
                )
                code = 1
                forward(signal.SIGTERM, None)
                break
            log.error("worker %d exited (%d); starting it again", number, status)
            start(number)
    deadline = time.monotonic() + STOP_WAIT_S
    for child in children.values():
        try:
            status = child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            status = child.wait()
        code = code or (status if status > 0 else 0)
    return code
