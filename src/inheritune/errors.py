"""The one exception type users see: the CLI prints its message as a single line."""


class InherituneError(Exception):
    """Bad input or an unmet precondition, described in one line for the user."""
