"""``leadscore``: the command line. This module only builds the click group; the commands
live with what they run: :mod:`streams.live.commands` (worker, produce, score, top, tail),
:mod:`streams.live.control_commands` (adjust, reset, erase),
:mod:`streams.replay.commands` (replay, calibrate) and :mod:`streams.contract_commands`
(rules check, schemas export).

Settings come from ``LEADSCORE_*`` environment variables (or ``.env``); see
``streams/settings.py``. Run ``leadscore COMMAND --help`` for each command.
"""

from __future__ import annotations

import logging

import click

from .contract_commands import rules, schemas
from .live.commands import produce, score, tail, top, worker
from .live.control_commands import adjust, erase, reset
from .replay.commands import calibrate, replay


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="leadscore")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Real-time lead scoring: exact event-time decay, hot-lead events, replay.

    Configuration comes from LEADSCORE_* environment variables (e.g.
    LEADSCORE_KAFKA_BOOTSTRAP_SERVERS, LEADSCORE_REDIS_URL, LEADSCORE_RULES_FILE).
    """
    ctx.ensure_object(dict)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


for _command in (
    worker,
    produce,
    adjust,
    reset,
    erase,
    score,
    top,
    tail,
    replay,
    calibrate,
    rules,
    schemas,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(obj={})


if __name__ == "__main__":
    main()
