"""The base class of errors a user fixes by changing their input (a file, a flag, a token list), not the code.

Command lines (`jaxkn.cli.run_cli`) print these as one line on stderr and exit with status 2; anything else is
a bug and keeps its traceback. Errors defined before this module existed (`CheckpointError`,
`UnsupportedConfigError`, `ContextLengthError`, ...) are listed in `jaxkn.cli.user_error_types` instead.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input that the message explains: what is wrong, where, and what to do about it."""


class JSONFileError(UserInputError):
    """A file that should hold JSON (a dataset, a config.json) is empty or not JSON; names the file and line."""


__all__ = ["JSONFileError", "UserInputError"]
