"""modelrunner: a declarative model server."""

__version__ = "0.1.0"
