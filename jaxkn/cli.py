"""Running a command line so that user errors end in one clear line and exit status 2, bugs in a traceback.

    def main(argv=None) -> int:
        return run_cli(_main, argv, prog="python -m jaxkn.something")

`_main(argv)` parses its flags and does the work. A user error (`user_error_types()`: a bad file, an existing
output folder, unsupported config, ...) prints `prog: error: <message>` on stderr and returns 2, argparse's
own usage-error status; `--debug` anywhere in argv (or JAXKN_DEBUG=1) lets it propagate with its traceback.
Ctrl-C prints one line and returns 130. Everything else is a bug and is never caught.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from jaxkn.attribution.config import AttributionInputError
from jaxkn.config import UnsupportedConfigError
from jaxkn.convert.mapping import CheckpointError
from jaxkn.data.items import ItemFormatError
from jaxkn.errors import UserInputError
from jaxkn.model import ContextLengthError
from jaxkn.tokenizer import TokenizerError

DEBUG_FLAG = "--debug"
USER_ERROR_STATUS, INTERRUPTED_STATUS = 2, 130


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "fix the input": jaxkn's own input errors plus missing/existing files.

    """
    return (UserInputError, ItemFormatError, CheckpointError, UnsupportedConfigError, AttributionInputError,
            ContextLengthError, TokenizerError, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError, PermissionError)


def add_debug_flag(parser) -> None:
    """Documents `--debug` in an argparse parser's help (`run_cli` reads and removes it before parsing)."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """(argv without `--debug`, whether it was there or JAXKN_DEBUG is set); arguments after `--` are kept."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:cut] or os.environ.get("JAXKN_DEBUG", "") not in ("", "0")
    return [a for a in argv[:cut] if a != DEBUG_FLAG] + argv[cut:], debug


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename is not None and e.strerror:  # "[Errno 2] ..." reads badly
        return f"{e.strerror}: {e.filename}"
    return str(e).strip() or type(e).__name__


def run_cli(main_fn: Callable[[list[str]], int | None], argv: Sequence[str] | None = None, *, prog: str,
            user_errors: tuple[type[BaseException], ...] | None = None) -> int:
    """Calls `main_fn(argv)` and turns user errors into one stderr line and status 2 (see module docstring).

    Args:
      main_fn: parses argv and does the work; returns an exit status (None counts as 0).
      argv: the arguments (default: sys.argv[1:]).
      prog: the command's name, first on the error line.
      user_errors: exception types reported without traceback (default: `user_error_types()`).
    Returns:
      the exit status.
    """
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    if debug:
        status = main_fn(argv)
        return 0 if status is None else int(status)
    caught = user_error_types() if user_errors is None else user_errors
    try:
        status = main_fn(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except caught as e:
        # The message as written: one line, or a summary line and a list (every bad record of a dataset).
        print(f"{prog}: error: {_message(e)}", file=sys.stderr)
        return USER_ERROR_STATUS
    return 0 if status is None else int(status)


__all__ = ["add_debug_flag", "run_cli", "split_debug", "user_error_types"]
