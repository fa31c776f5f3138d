"""Helpers for tests that post Twilio's webhooks to the app: reading TwiML answers and the
step log they wrote."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ivr.calllog.store import Store

CALLER = {"From": "+14155550100", "To": "+15005550006"}


def parse(response) -> ET.Element:
    """The TwiML of a 200 answer (fails the test on anything else)."""
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.data)
    assert root.tag == "Response"
    return root


def said(root: ET.Element) -> str:
    return " ".join(e.text or "" for e in root.iter("Say"))


def flush(app) -> Store:
    """The app's SQL store with the step log written into it."""
    svc = app.extensions["ivr"]
    svc.migrate()
    svc.recorder().flush()
    return svc.store
