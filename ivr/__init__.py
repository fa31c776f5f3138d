"""Support IVR: a Twilio voice server that runs call flows written as YAML."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["create_app", "__version__"]


def create_app(*args, **kwargs):
    """Build the Flask app (see ivr.web.app.create_app)."""
    from ivr.web.app import create_app as _create_app

    return _create_app(*args, **kwargs)
