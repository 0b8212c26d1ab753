"""Atomic writes: a killed process never leaves a half-written file under its final name, and a
failed command leaves nothing it wrote behind.

Files and folders get the permissions the user's umask gives a plain ``open``/``mkdir``
(``mkstemp``/``mkdtemp`` alone would make them private to the owner).

Temporary names carry the writer's process id (``.<name>.<pid>-<random>.part``), so the next
write of the same output removes what a killed writer left (its process is gone) and never what
a live one is writing.

Inside :func:`undo_on_failure` (the CLI wraps every command in it) each file and folder these
helpers create is recorded; when the block fails, they are removed, newest first, so a failed
command leaves nothing it wrote in this invocation and keeps everything that was there before.
:func:`check_writable` says before the first write why an output could not be written there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cfx.counterfactual.errors import UserInputError

__all__ = ["atomic_path", "write_bytes", "write_text", "staged_dir", "current_umask",
           "undo_on_failure", "make_dirs", "claim_new", "check_writable", "TEMP_MARGIN"]

TEMP_MARGIN = 40
"""Bytes a temporary name adds to an output's name (``.``, ``.<pid>-<random>.part``, a suffix
such as ``.nii.gz``): an output name must leave this much room below the file system's limit."""

_journal: list[tuple[str, Path]] | None = None


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


# -- undoing a failed command ------------------------------------------------------------------

def _record(kind: str, path: Path) -> None:
    if _journal is not None:
        _journal.append((kind, path))


def _undo(entries: list[tuple[str, Path]]) -> None:
    """Remove what ``entries`` recorded, newest first: ``file`` unlinked, ``dir`` removed when
    empty, ``tree`` removed whole, ``contents`` emptied (the folder itself was there before)."""
    for kind, path in reversed(entries):
        try:
            if kind == "file":
                path.unlink(missing_ok=True)
            elif kind == "dir":
                path.rmdir()
            elif kind == "tree":
                shutil.rmtree(path)
            elif kind == "contents":
                for child in path.iterdir():
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() \
                        else child.unlink()
        except OSError:
            continue  # not empty (another writer's files), or gone already


@contextlib.contextmanager
def undo_on_failure(keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Record the files and folders created in the block; if it raises an :class:`Exception`
    (other than one of ``keep``), remove them (newest first) and re-raise. Files that existed
    before are never removed.

    An interrupt (``KeyboardInterrupt``, or what ``keep`` names) keeps them, as a kill would: a
    sweep resumes from them.
    """
    global _journal
    outer, _journal = _journal, []
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, keep):
            _undo(_journal)
        raise
    finally:
        _journal = outer


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p path``, recording each folder it creates (see :func:`undo_on_failure`)."""
    path = Path(path)
    missing = _missing_ancestors(path)
    path.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        _record("dir", folder)
    return path


def claim_new(path: str | os.PathLike) -> None:
    """Say that this command creates the folder ``path`` if it does not exist (or fills it if it
    is empty): on failure it is removed whole (emptied), with any ancestor created for it."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        if not any(path.iterdir()):
            _record("contents", path)
        return
    if path.exists() or path.is_symlink():
        return
    *parents, _ = _missing_ancestors(path)
    for folder in parents:
        _record("dir", folder)
    _record("tree", path)


# -- checking before writing ------------------------------------------------------------------

def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_writable(path: str | os.PathLike, what: str, inside: bool = True) -> None:
    """Refuse now, with one line naming ``path``, an output that could not be written later.

    Refused: ``path`` is a file (an output folder is wanted), one of its folders is a file, a
    name longer than the file system allows (the last one with :data:`TEMP_MARGIN` bytes to
    spare), and a folder the writes would go to that is read-only, not writable by this user,
    or on a full file system.

    Parameters
    ----------
    path : path
        The output folder, existing or not.
    what : str
        What it is (``"--out"``), first in the message.
    inside : bool
        Writes go inside ``path`` (True) or beside it, into its parent (False: a staged folder).

    Raises
    ------
    UserInputError
    """
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    missing = _missing_ancestors(absolute)
    nearest = missing[0].parent if missing else absolute
    if not nearest.is_dir():
        if nearest == absolute:
            raise UserInputError(f"{what}: {path} is a file; give a folder (new or existing)")
        raise UserInputError(f"{what}: {nearest} is a file, so {path} cannot be made under it; "
                             "give a path whose every part is a folder")
    limit = _name_max(nearest)
    for folder in [*missing[:-1], absolute] if missing else [absolute]:
        spare = TEMP_MARGIN if folder == absolute else 0
        size = len(os.fsencode(folder.name))
        if size + spare > limit:
            raise UserInputError(f"{what}: the name {folder.name[:24]}... is {size} bytes; this "
                                 f"file system allows {limit} (cfx needs {spare} to spare for "
                                 "temporary names); choose a shorter name")
    target = nearest if (inside or missing) else absolute.parent
    stats = os.statvfs(target)
    if stats.f_flag & os.ST_RDONLY:
        raise UserInputError(f"{what}: {target} is on a read-only file system; choose "
                             "another location")
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserInputError(f"{what}: no permission to write in {target}; choose a folder "
                             "you can write to")
    if stats.f_blocks and not stats.f_bavail:
        raise UserInputError(f"{what}: no space left on the file system of {target}; free "
                             "some or choose another location")


# -- temporary names ---------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _remove_stale(path: Path, endings: tuple[str, ...]) -> None:
    """Delete temporary siblings of ``path`` (``.<name>.<pid>-*`` ending in one of ``endings``)
    whose writer is gone: a killed write's leftovers. Names without a process id are stale."""
    prefix = f".{path.name}."
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for stale in siblings:
        rest = stale.name[len(prefix):]
        if not any(end in rest for end in endings):
            continue
        pid, _, _ = rest.partition("-")
        if pid.isdigit() and _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    ``suffix`` is kept at the end of the temporary name so writers that choose a format
    from the extension (``.nii.gz``) see the right one.
    """
    path = Path(path)
    make_dirs(path.parent)
    _remove_stale(path, (".part",))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=f".part{suffix}",
                               dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        new = not (path.exists() or path.is_symlink())
        os.replace(tmp, path)
        if new:
            _record("file", path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def _swap(new: Path, path: Path) -> None:
    """Put the folder ``new`` at ``path`` and delete what was there; if that fails, the earlier
    folder stays at ``path`` (or, if even putting it back fails, in ``.<name>.<pid>-*.old``)."""
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".old",
                                dir=path.parent))
    try:
        os.replace(path, old / path.name)
    except BaseException:
        old.rmdir()
        raise
    try:
        os.replace(new, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.replace(old / path.name, path)
            old.rmdir()
        raise
    shutil.rmtree(old)


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes ``path`` only if the block succeeds.

    ``path`` must not exist yet or be an empty folder, so a failed command leaves nothing behind;
    with ``replace``, an existing ``path`` is swapped out (and deleted) only after success.
    Temporary folders a killed command left beside ``path`` are deleted first.
    """
    path = Path(path)
    check_writable(path, str(path), inside=False)
    make_dirs(path.parent)
    _remove_stale(path, (".part", ".old"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".part",
                                dir=path.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())
        yield tmp
        if replace and path.is_dir() and any(path.iterdir()):
            _swap(tmp, path)
            return
        existed = path.is_dir()
        if existed:
            path.rmdir()
        os.replace(tmp, path)
        _record("contents" if existed else "tree", path)  # an empty folder there stays
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
