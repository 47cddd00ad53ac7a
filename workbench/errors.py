"""Errors a user can cause. The CLI turns them into one line on stderr and exit code 2."""


class WbError(Exception):
    """A problem with the user's input (file, recipe, profile, arguments), not a bug in wb."""
