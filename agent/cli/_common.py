"""What the ``coffee-telemetry`` subcommands share: exit codes, options, config, logging."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from coffee_telemetry.agent.config import Config, load_config
from coffee_telemetry.agent.logs import LogFormat, configure_logging

__all__ = [
    "CONFIG_HELP",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "Subcommands",
    "add_config_command",
    "install_stop",
    "load",
    "needs_config",
    "setup_logging",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_USAGE = 2

#: The help of every ``-c/--config`` option.
CONFIG_HELP = "site TOML file"


#: What ``add_subparsers`` returns, where each module adds its subcommands.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def needs_config() -> argparse.ArgumentParser:
    """A parent parser with the required ``-c/--config`` option, for ``parents=[...]``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-c", "--config", required=True, help=CONFIG_HELP)
    return parent


def add_config_command(
    sub: Subcommands, name: str, *, summary: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` (help ``summary``) taking ``-c/--config``, run by ``run``.

    Returns:
        Its parser, for the options and arguments of its own.
    """
    command = sub.add_parser(name, parents=[needs_config()], help=summary)
    command.set_defaults(func=run)
    return command


def load(path: str) -> Config:
    """Load the site config at ``path`` (``ConfigError`` goes up to ``main``)."""
    return load_config(Path(path))


def setup_logging(level: str, log_format: LogFormat | None = None) -> None:
    """Log to stderr at ``level`` (a name such as ``info``), as text or JSON lines.

    ``log_format`` None: ``COFFEE_TELEMETRY_LOG_FORMAT`` decides (``agent.logs``).
    """
    configure_logging(level, log_format)


def install_stop(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
