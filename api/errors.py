"""The root of every headway exception, so callers can catch headway's own failures in one place."""


class HeadwayError(Exception):
    """Root of headway's exceptions."""
