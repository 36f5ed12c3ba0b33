"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A bad path, spec, parameter or input: shown to the user as one sentence."""


class PublishError(RuntimeError):
    """A publisher could not reach the broker, or records were not acknowledged; the
    message says so in one line (see qsframework.publish)."""


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``: an exception as part of a one-line error."""
    name = type(exc).__name__
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    head, named, tail = text.partition(name)
    if named and len(head) <= 16:  # the library named the type itself ("[Error 10] Name: ...")
        text = tail.lstrip(": ")
    return f"{name}: {text}" if text else name
