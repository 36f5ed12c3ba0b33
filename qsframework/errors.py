"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A bad path, spec, parameter or input: shown to the user as one sentence."""


class StrategyError(UserError):
    """A strategy's own code raised: the message names the strategy, the handler, the event
    being handled and the exception; the original exception is the ``__cause__`` (``-v``
    shows its traceback)."""
