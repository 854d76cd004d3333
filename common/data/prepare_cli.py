"""The command-line protocol shared by ``scripts/prepare_{brats,ixi,synthrad}.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["run_prepare"]


def run_prepare(name: str, prepare: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a ``prepare_*`` function for a CLI: log to stderr, print the one-line summary to stdout.

    Raises:
        SystemExit: ``"<name>: error: ..."`` when a folder is missing or an argument is invalid, and exit
            status 1 when no subject is usable (nothing is written then).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = prepare(*args, **kwargs)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        raise SystemExit(f"{name}: error: {err}") from None
    print(report.summary())
    if not report.included:
        raise SystemExit(1)
    return report
