"""Errors the autoscaler reports to its user."""


class ConfigError(ValueError):
    """Bad command-line input or profile file; the CLI prints it as one line and exits non-zero."""


class MetricsUnavailable(RuntimeError):
    """The metrics source did not answer, or answered without the series a decision needs."""
