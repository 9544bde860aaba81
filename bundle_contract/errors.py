"""The one user-error base class: every command prints it as one line and exits non-zero."""


class UserError(Exception):
    """Bad input or an impossible request: the message says what and what to do."""
