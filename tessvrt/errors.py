"""The one exception type the CLI turns into a one-line message."""


class TessvrtError(Exception):
    """A problem the user can fix; the message names it and the fix."""


class MissingObject(TessvrtError):
    """An object is gone (404) or forbidden (403): not worth retrying."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status
