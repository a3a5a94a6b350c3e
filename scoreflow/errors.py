"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a missing file, a malformed config, an unknown name, a missing package."""


class StopRun(Exception):
    """A clean stop that is not a failure, such as reaching a spend cap."""


class RunFailed(Exception):
    """A run failed on something other than bad input; its traceback is saved, the CLI prints one line
    and exits with code 1. The cause is the original exception."""


class InfraError(Exception):
    """A failure of the machinery (executor down after retries, a sandbox that cannot start), not of
    the code under test."""


def one_line(text: str, limit: int = 400) -> str:
    """`text` with its whitespace runs (newlines included) folded to single spaces, cut to `limit`."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."
