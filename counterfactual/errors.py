"""The one exception a user can cause."""

__all__ = ["UserInputError"]


class UserInputError(ValueError):
    """Bad input from the user: a missing file, a bad value, an unknown name.

    The message is one line naming the file or field, what was found and what to do.
    The CLI prints it without a traceback and exits with code 2.
    """
