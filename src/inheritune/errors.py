"""The one exception type users see: the CLI prints its message as a single line."""


class InherituneError(Exception):
    """Bad input or an unmet precondition, described in one line for the user."""


class TrainingInterrupted(InherituneError):
    """SIGINT/SIGTERM: the step finished and a checkpoint was written; ``--resume`` continues."""
