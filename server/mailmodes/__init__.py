"""mailmodes: a reference mail server for testing how mail clients behave in every TLS mode."""

__version__ = "0.1.0"
