"""Errors the engine raises for requests it cannot serve (a user's mistake, not a bug)."""


class EngineConfigError(ValueError):
    """A model, config, window or request that the engine cannot run; the message says why."""


class CheckpointError(EngineConfigError):
    """A checkpoint folder that cannot be loaded; the message names the file."""
