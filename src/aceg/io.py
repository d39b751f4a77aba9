"""File output: checked up front, written atomically, readable as the umask allows.

Commands call :func:`check_output_path` on every output before they start work, so a bad
output path fails before any mapping is done; the writers then go through
:func:`atomic_path` (temporary file beside the target, renamed on success), so an
interrupted run never leaves a half-written file under the target's name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from aceg.errors import file_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode for a written file: 0666 less the process's umask (``mkstemp`` would leave
    0600 whatever the umask)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """Mode for a written folder: 0777 less the umask (``mkdtemp`` would leave 0700)."""
    return 0o777 & ~_umask()


def _existing_ancestor(path: Path) -> Path:
    return next(parent for parent in path.parents if parent.exists())  # "." or "/" at worst


def check_output_path(target: str | Path, *, inputs: Iterable[str | Path] = (),
                      suffixes: Iterable[str] = (), what: str = "output",
                      folder: bool = False) -> Path:
    """Fail early, with :class:`AcegError` naming ``target``, if it cannot be written.

    Refused: a target that is a folder (a file when ``folder``), a parent "folder" that
    is a file, a folder that cannot be created or written, a target that is one of
    ``inputs`` (files the command reads: it would overwrite them), and a suffix not in
    ``suffixes`` (lower case, with the dot) when given. Nothing is created. (A converted
    scene inside its source folder is refused by :func:`aceg.data.writers.write_ace_scene`.)
    """
    target = Path(target)
    suffixes = tuple(suffixes)
    if suffixes and target.suffix.lower() not in suffixes:
        raise file_error(target, f"{what} must end in {' or '.join(suffixes)}")
    if target.is_dir() and not folder:
        raise file_error(target, f"is a folder; give a file name for the {what}")
    if target.is_file() and folder:
        raise file_error(target, f"is a file; give a folder for the {what}")
    resolved = target.resolve()
    for source in inputs:
        if resolved == Path(source).resolve():
            raise file_error(target, f"is an input of this command; the {what} would overwrite it")
    ancestor = target if folder and target.is_dir() else _existing_ancestor(target)
    if not ancestor.is_dir():
        raise file_error(target, f"cannot create the {what}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise file_error(target, f"cannot write the {what}: no write permission in {ancestor}")
    return target


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``target``, on error it is removed.

    The temporary file sits in the target's folder so the final ``os.replace`` is atomic.
    An unwritable target raises :class:`AcegError` naming it.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise file_error(target, f"cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise file_error(target, f"cannot write here ({exc.strerror or exc})") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
