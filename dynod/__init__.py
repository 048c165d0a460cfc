"""dynod: Heroku's runtime on one machine, without containers."""

__version__ = "0.1.0"
