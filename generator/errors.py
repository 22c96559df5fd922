"""The one error type a user sees: printed without a traceback, exit code 2."""


class UserError(Exception):
    """Bad input. The message is shown as is; it must never hold a secret's value."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
