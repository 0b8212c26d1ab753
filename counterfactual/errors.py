"""The one exception a user can cause, and the one line an operating-system failure becomes."""

from __future__ import annotations

import errno

__all__ = ["UserInputError", "KeptOutputError", "describe_os_error"]


class UserInputError(ValueError):
    """Bad input from the user: a missing file, a bad value, an unknown name.

    The message is one line naming the file or field, what was found and what to do.
    The CLI prints it without a traceback and exits with code 2.
    """


class KeptOutputError(UserInputError):
    """A user error raised after a command deliberately kept what it wrote: a training run that
    stopped on divergence keeps its last good checkpoint. The CLI does not undo the command's
    writes for it (see :func:`cfx.counterfactual.atomic.undo_on_failure`)."""


_WHAT_TO_DO = {
    errno.ENOSPC: "no space left on the device; free some or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EROFS: "read-only file system; write elsewhere",
    errno.EACCES: "permission denied; use a path you may read and write",
    errno.EPERM: "operation not permitted; use a path you may read and write",
    errno.ENAMETOOLONG: "name too long for the file system; choose a shorter one",
    errno.ENOTDIR: "a part of this path is a file, not a folder; fix the path",
    errno.EISDIR: "is a folder; give a file",
    errno.EEXIST: "already exists; choose another name or remove it",
    errno.ENOENT: "no such file or folder; check the path",
    errno.ENOTEMPTY: "folder not empty; choose another one",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.EIO: "input/output error; check the disk",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system failure: the path(s) it names, then what happened and
    what to do (``[Errno 28] No space left on device: 'x'`` -> ``x: no space left on the
    device; free some or write elsewhere``)."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    what = _WHAT_TO_DO.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__)
    where = " -> ".join(paths)
    text = f"{where}: {what}" if where else f"{what} ({type(exc).__name__})"
    return " ".join(text.split())
