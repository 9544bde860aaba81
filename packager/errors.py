"""The packager's user error; the CLI prints every UserError as one line and exits 1."""

from bundle_contract.errors import UserError


class PackError(UserError):
    """Bad input or an impossible request while packaging, evaluating or serving."""
