"""The one exception type the CLI turns into a single line and a non-zero exit."""


class PackError(Exception):
    """Bad input or an impossible request: the message says what and what to do."""
