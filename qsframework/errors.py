"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A bad path, spec, parameter or input: shown to the user as one sentence."""


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``: an exception as part of a one-line error."""
    name = type(exc).__name__
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    text = text.removeprefix(name).lstrip(": ")  # some libraries name the type themselves
    return f"{name}: {text}" if text else name
