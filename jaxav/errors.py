"""Exception types that the CLI turns into one clear line and a non-zero exit."""


class JaxavError(Exception):
    """Base class: an error whose message is meant for the user, not a traceback."""


class ConfigError(JaxavError):
    """A config file, variant or command-line override is wrong (names the key)."""


class AudioError(JaxavError):
    """An audio file cannot be used; the message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(JaxavError):
    """A dataset is missing, empty or malformed; the message says how to fix it."""


class CheckpointError(JaxavError):
    """A checkpoint is missing, partial or belongs to a different model."""


class TrainingError(JaxavError):
    """Training cannot go on (e.g. too many non-finite losses in a row); names the step."""
