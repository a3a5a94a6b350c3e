"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a missing file, a malformed config, an unknown name, a missing package."""


class StopRun(Exception):
    """A clean stop that is not a failure, such as reaching a spend cap."""
