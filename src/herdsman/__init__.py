"""herdsman: a process supervisor for Linux."""

__version__ = "0.1.0"
