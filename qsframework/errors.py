"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A bad path, spec, parameter or input: shown to the user as one sentence."""
