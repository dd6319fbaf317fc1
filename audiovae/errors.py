"""The one exception type for mistakes a user can fix (a file, a key, a flag)."""


class UserError(Exception):
    """An error caused by the user's input; the CLI prints its message on one line and exits 1.

    The message names the file or key and, where possible, what to do about it.
    """
