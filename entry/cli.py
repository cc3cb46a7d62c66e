"""What both entry points do with a user's mistake: one line on stderr naming the key or argument, rc 2.

The traceback is kept for developers behind RECO_DEBUG=1. Only errors that describe bad input are
turned into one line (a config key, a missing file, an unreadable checkpoint); anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import Callable, Optional

from utils.config import ConfigError, check_device_name

# Bad input, not bugs: config keys and values, missing or unreadable files (pickle errors are raised
# by utils.io.safe_load_pickle with the file's name in the message).
USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, OSError, pickle.UnpicklingError)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells expect of a program stopped by Ctrl-C


class Interrupted(Exception):
    """A run stopped by a signal after keeping what it had done (the message says what and how to go on)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


def check_device_argument(device: Optional[str]) -> None:
    """--device is checked before the config is read, so the message names the argument, not the file."""
    if device is not None:
        check_device_name(device, key="--device")


def run_reporting_errors(run: Callable[[], None], config_path: str) -> int:
    """run(); a user error becomes `error: <config file>: <key>: <what is wrong>` and rc 2; Ctrl-C one line
    and rc 130 (128 + the signal for a run that stopped cleanly on SIGTERM)."""
    try:
        run()
    except KeyboardInterrupt:
        if os.environ.get("RECO_DEBUG"):
            raise
        print("\ninterrupted (Ctrl-C): finished files are kept, a re-run goes on from them", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Interrupted as stop:
        print(f"\ninterrupted: {stop}", file=sys.stderr)
        return 128 + int(stop.signum)
    except USER_ERRORS as error:
        if os.environ.get("RECO_DEBUG"):
            raise
        print(f"error: {describe(error, config_path)}", file=sys.stderr)
        print("(set RECO_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def describe(error: BaseException, config_path: str) -> str:
    """The error's message; config errors are prefixed with the config file unless they name it or an
    argument already. A message that would say nothing on its own (e.g. a bare number) gets its type."""
    message = str(error).strip()
    if not message or message.isdigit() or len(message) < 4:
        message = f"{type(error).__name__}: {message}".rstrip(": ")
    if isinstance(error, ConfigError) and str(config_path) not in message and not message.startswith("--"):
        message = f"{config_path}: {message}"
    return message
