"""The exceptions forgetless raises: each message says what was wrong and what to do next."""


class ForgetlessError(Exception):
    """Base class: every error forgetless raises on purpose derives from it."""


class DataError(ForgetlessError):
    """A data file is missing, corrupt, or does not match its pinned hash."""


class ConfigError(ForgetlessError, ValueError):
    """A parameter, scenario, protocol, model or strategy choice is invalid."""


class TrainingError(ForgetlessError):
    """Training cannot go on: the loss became NaN or infinite (the run diverged)."""
