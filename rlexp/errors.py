"""The one exception users see: a bad config or input, reported before any expensive work."""


class ConfigError(ValueError):
    """Bad user input (config value, path, checkpoint). Printed as a one-line error, no traceback."""
