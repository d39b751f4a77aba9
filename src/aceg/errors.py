"""The one error type users see.

Every reader, loader and command raises :class:`AcegError` for bad input. The CLI prints
its message on one line (``aceg: error: <message>``) and exits with code 2; no traceback.
Messages name the file (and line, where there is one) and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path


class AcegError(Exception):
    """Bad input or an unusable setting, explained in one line for the user."""

    exit_code = 2


def file_error(path: str | Path, problem: str, line: int | None = None) -> AcegError:
    """An :class:`AcegError` of the form ``<file>[:<line>]: <problem>``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return AcegError(f"{where}: {problem}")


class AcegWarning(UserWarning):
    """Something the user should know that does not stop the command (e.g. a map file
    loaded without a content hash to verify it). The CLI prints it as one line."""
