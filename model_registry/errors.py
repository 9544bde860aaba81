"""The one exception type the registry raises for user errors."""

from bundle_contract.errors import UserError


class RegistryError(UserError):
    """Bad input, a missing or damaged registry entry, or a refused operation.

    The message is one line a user can act on: what is wrong and what to do about it.
    The CLI prints it as ``error: <message>`` and exits with status 1.
    """
