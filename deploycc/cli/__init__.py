"""The `deploycc` command line: verbs in their modules, rendering in render.py; user errors become one line
and an exit code, bugs keep their traceback."""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.22 vendors click; older typer raises click's own exceptions
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from ..errors import DeployccError
from . import datasets, artifacts, runs, performance  # noqa: F401,I001  (each registers its verbs, in help order)
from .app import app
from .console import errors
from .signals import INTERRUPTED, interrupt_code, terminate_as_interrupt

__all__ = ["app", "main", "EX_USAGE"]

EX_USAGE = 64  # a bad flag, a missing argument, a value of the wrong type (sysexits.h)


def _say(line: str) -> None:
    errors.print(f"error: {line}", markup=False, soft_wrap=True)


def _usage_line(exc: click_exceptions.UsageError) -> str:
    """Click's message as one line, with the command whose --help lists the options."""
    message = " ".join(exc.format_message().split())
    command = exc.ctx.command_path if exc.ctx is not None else "deploycc"
    return f"{message} (see '{command} --help')"


def main(args: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and their exit code; bugs keep their traceback.

    64 for usage errors, the error's own code for a `DeployccError`, 130 for Ctrl-C and 143 for SIGTERM
    (both unwind the same way, so staging folders and temporary files are removed)."""
    try:
        with terminate_as_interrupt():
            code = app(args=args, standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(0)
    except click_exceptions.UsageError as exc:
        _say(_usage_line(exc))
        sys.exit(EX_USAGE)
    except click_exceptions.ClickException as exc:
        _say(" ".join(exc.format_message().split()))
        sys.exit(65)
    except typer.Abort:
        _say(INTERRUPTED)
        sys.exit(interrupt_code())
    except KeyboardInterrupt:
        _say(INTERRUPTED)
        sys.exit(interrupt_code())
    except DeployccError as exc:
        _say(str(exc))
        sys.exit(interrupt_code() if exc.exit_code == 130 else exc.exit_code)
    if code == 130:  # typer turned an interrupt into Exit(130) before a verb could say what it left behind
        _say(INTERRUPTED)
        sys.exit(interrupt_code())
    if isinstance(code, int) and code:
        sys.exit(code)
