"""Exceptions raised for problems a user can fix."""


class InputError(ValueError):
    """Bad user input: the message names the problem and the fix.

    The CLI turns it into a one-line error and a non-zero exit code.
    """
