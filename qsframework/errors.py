"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A bad path, spec, parameter or input: shown to the user as one sentence."""


class StrategyError(UserError):
    """A strategy's own code raised: the message names the strategy, the handler, the event
    being handled and the exception; the original exception is the ``__cause__`` (``-v``
    shows its traceback)."""


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
