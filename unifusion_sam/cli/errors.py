"""The command line's own error type."""


class CLIError(Exception):
    """A user error: printed as ``error: ...`` with exit status 2."""
