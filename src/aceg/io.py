"""File output: checked up front, written atomically, readable as the umask allows.

Commands call :func:`check_output_path` on every output before they start work, so a bad
output path fails before any mapping is done; the writers then go through
:func:`atomic_path` (temporary file beside the target, renamed on success), so an
interrupted run never leaves a half-written file under the target's name.

Beside an output ``<name>``, a writer uses ``.<name>.tmp-<pid>`` (its temporary file or
folder; those of dead writers are removed by the next writer) and ``.<name>.lock`` (the
write lock, :func:`output_lock`: one writer at a time, a second one is refused).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from aceg.errors import AcegError, file_error


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


#: Temporary outputs are ``.<name>.tmp-<pid>`` beside the target, so a later writer can
#: tell whose they are and remove those of writers that died (:func:`remove_stale_temps`).
TEMP_MARK = ".tmp-"
#: The write lock of ``<name>`` is ``.<name>.lock`` beside it (:func:`output_lock`).
LOCK_SUFFIX = ".lock"

_held: dict[Path, tuple[int, int]] = {}  # target -> (lock fd, owning thread)
_held_guard = threading.Lock()


def temp_path(target: str | Path) -> Path:
    """Where this process writes ``target`` before renaming it: ``.<name>.tmp-<pid>``."""
    target = Path(target)
    return target.parent / f".{target.name}{TEMP_MARK}{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # another user's process, or an impossible pid
    return True


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Remove the temporary files and folders of ``target`` (:func:`temp_path`) left by
    writers that no longer run (killed, or the machine went down); returns them."""
    target = Path(target)
    prefix = f".{target.name}{TEMP_MARK}"
    removed = []
    with contextlib.suppress(OSError):
        for path in target.parent.iterdir():
            pid = path.name[len(prefix):]
            if not path.name.startswith(prefix) or not pid.isdigit() or _pid_alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


def _lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def _holder(lock: Path) -> tuple[str, str]:
    """``(command, pid)`` of the process holding ``lock``, as it wrote them."""
    try:
        pid, _, command = lock.read_text(encoding="utf-8").partition("\n")
    except (OSError, UnicodeDecodeError):
        pid, command = "", ""
    return command.strip() or "aceg", pid.strip() if pid.strip().isdigit() else "unknown"


def _acquire(target: Path, command: str) -> int:
    """Open and ``flock`` the lock file of ``target`` without waiting; :class:`AcegError`
    naming the holder when another process has it. The lock file is opened again if its
    last holder removed it between our open and our lock."""
    lock = _lock_file(target)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, file_mode())
        except OSError as exc:
            raise file_error(target, f"cannot write here ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder, pid = _holder(lock)
            raise AcegError(f"another {holder} is writing {target} (pid {pid})") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{command}\n".encode())
    except OSError as exc:  # e.g. a full disk: give the lock back, say where
        os.close(fd)
        raise file_error(target, f"cannot write here ({exc.strerror or exc})") from None
    return fd


@contextlib.contextmanager
def output_lock(target: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold the write lock of ``target`` (``fcntl.flock`` on ``.<name>.lock`` beside it)
    for the block: a second writer of the same output, in another process or thread,
    gets :class:`AcegError` ``another <command> is writing <target> (pid N)`` instead of
    racing. Re-entrant within one thread (a command holds it for its whole run, its
    writers take it again). The lock dies with its process, so a killed writer never
    blocks the next one; the lock file is removed on release. ``command`` is what the
    message names (default: ``aceg <sub-command>`` of this process). Creates the
    target's folder."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        key = target.parent.resolve() / target.name
    except OSError as exc:
        raise file_error(target, f"cannot write here ({exc.strerror or exc})") from None
    me = threading.get_ident()
    with _held_guard:
        fd, owner = _held.get(key, (None, None))
        if fd is not None and owner != me:
            raise AcegError(f"another {command or _command()} is writing {target} "
                            f"(pid {os.getpid()})")
        if fd is None:
            fd = _acquire(target, command or _command())
            _held[key] = (fd, me)
            mine = True
        else:
            mine = False  # re-entered: the outer block releases
    try:
        yield target
    finally:
        if mine:
            with _held_guard:
                del _held[key]
                with contextlib.suppress(OSError):
                    _lock_file(target).unlink()
                os.close(fd)


def _command() -> str:
    """``aceg <sub-command>`` of this process, for lock messages."""
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    return f"aceg {args[0]}" if args and Path(sys.argv[0]).name in ("aceg", "__main__.py") \
        else "aceg"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``target``, on error it is removed.

    The temporary file (:func:`temp_path`) sits in the target's folder so the final
    ``os.replace`` is atomic. The write holds :func:`output_lock`, and first removes the
    temporary files of earlier writers of ``target`` that died
    (:func:`remove_stale_temps`). An unwritable target raises :class:`AcegError` naming it.
    """
    target = Path(target)
    with output_lock(target):
        remove_stale_temps(target)
        tmp_path = temp_path(target)
        try:
            if tmp_path.is_symlink() or tmp_path.exists():
                tmp_path.unlink()  # this process's own leftover (same pid)
            # exclusive and not through a link: nobody else's file is written through ours
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise file_error(target, f"cannot write here ({exc.strerror or exc})") from None
        os.close(fd)
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
