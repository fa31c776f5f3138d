"""Whole French calls through the webhooks (the Flask app, signed requests, real Redis) on the
example French line, flows/assistance.yaml: no <Say> holds an English sentence of the
message catalogue, and every <Say> and <Gather> is in the flow's language and voice."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from babel.messages.pofile import read_po

from ivr.i18n.catalogue import TEMPLATE

LINE = "+33185000000"  # flows/assistance.yaml
CAMILLE = "+33639980001"  # flows/clients.csv
VOICE = "Polly.Lea-Neural"  # the French catalogue's voice for fr-FR


def english_sentences() -> list[tuple[str, re.Pattern]]:
    """Every sentence and phrase of the English catalogue (messages.pot) that calls say
    (ivr/i18n/sentences.py; the screens' strings are not) and that has two or more words of
    its own, as a pattern with its {placeholders} matching anything: the settings and the
    lists of words callers say are not said."""
    with TEMPLATE.open("rb") as f:
        catalog = read_po(f)
    found = []
    for m in catalog:
        if not m.id or not any(path == "ivr/i18n/sentences.py" for path, _ in m.locations):
            continue
        if m.context in ("voice", "phone number digits") or (m.context or "").startswith("words"):
            continue
        for text in (m.id if isinstance(m.id, tuple) else (m.id,)):
            literal = re.split(r"\{[^{}]*\}", text)
            if sum(len(re.findall(r"[A-Za-z']+", part)) for part in literal) < 2:
                continue
            found.append((text, re.compile(".+?".join(re.escape(part) for part in literal))))
    return found


ENGLISH = english_sentences()


def english_in(root: ET.Element) -> list[str]:
    return [text for say in root.iter("Say") for text, pattern in ENGLISH if pattern.search(say.text or "")]


def said(root: ET.Element) -> str:
    return " ".join(e.text or "" for e in root.iter("Say"))


class FrenchCall:
    """One call to the French line; every answer is checked to be French TwiML."""

    def __init__(self, twilio, sid: str, caller: str):
        self.twilio, self.sid, self.caller = twilio, sid, caller
        self.heard: list[str] = []

    def post(self, path: str, **params) -> ET.Element:
        response = self.twilio.post(path, CallSid=self.sid, From=self.caller, To=LINE, **params)
        assert response.status_code == 200, response.data
        root = ET.fromstring(response.data)
        assert root.tag == "Response"
        for say in root.iter("Say"):
            assert (say.get("language"), say.get("voice")) == ("fr-FR", VOICE), ET.tostring(say)
        for gather in root.iter("Gather"):
            assert gather.get("language") == "fr-FR", ET.tostring(gather)
        assert english_in(root) == []
        self.heard.append(said(root))
        return root

    def answer(self, root: ET.Element, **params) -> ET.Element:
        """Answer the <Gather> of `root`, at the URL it names."""
        return self.post(root.find("Gather").get("action"), **params)


@pytest.fixture
def clock(monkeypatch):
    import ivr.runtime.services

    def at(moment: datetime) -> None:
        monkeypatch.setattr(ivr.runtime.services, "clock", lambda: moment)

    at(datetime(2026, 11, 24, 15, 0, tzinfo=UTC))  # a Tuesday, 16:00 in Paris, 10:00 in New York
    return at


def test_the_catalogue_check_finds_english_when_there_is_some(twilio, clock):
    """The check below can fail: an English call's TwiML is full of catalogue sentences."""
    menu = ET.fromstring(twilio.post("/voice", CallSid="CAen", From="Anonymous", To="+15005550006").data)
    silence = ET.fromstring(twilio.post(menu.find("Gather").get("action"), CallSid="CAen").data)
    assert "For {label}, press {keys}." in english_in(menu)
    assert "Sorry, I didn't hear anything." in english_in(silence)
    assert len(ENGLISH) > 40


def test_a_known_caller_says_what_she_wants_holds_and_books_a_callback_in_french(twilio, clock):
    call = FrenchCall(twilio, "CAfr-known", CAMILLE)
    menu = call.post("/voice")
    assert said(menu).startswith("Bonjour Camille, merci d'appeler Northwind Fibre.")
    assert "Pour la facturation, tapez 1." in said(menu)
    assert "speech" in menu.find("Gather").get("input")

    queued = call.answer(menu, SpeechResult="On m'a prélevé deux fois ce mois-ci.", Confidence="0.9")
    assert queued.find("Enqueue").text == "facturation"
    assert said(queued) == "Je vous mets en relation avec le service facturation."

    step = queued.find("Enqueue").get("waitUrl").split("s=")[1]
    wait = call.post(f"/voice/queue/wait?s={step}", QueuePosition=3, QueueTime=40, AvgQueueTime=300,
                     CurrentQueueSize=3)
    offer = wait.find("Gather")  # nobody staffs the queue yet: the callback is offered
    assert "Vous êtes en position 3 dans la file d'attente." in said(wait)
    assert "tapez 1, ou dites rappelez-moi." in said(offer)
    assert "rappelez-moi" in offer.get("hints")

    left = call.post(offer.get("action"), SpeechResult="Rappelez-moi.")
    assert left.find("Leave") is not None
    confirm = call.post(f"/voice/queue/left?s={step}", QueueResult="leave", QueueTime=50)
    assert said(confirm) == ("Nous vous rappellerons au 0 6, 39, 98, 0 0, 0 1. Pour confirmer, tapez 1. "
                             "Pour donner un autre numéro, tapez 2.")

    booked = call.answer(confirm, SpeechResult="Oui, c'est bien ça.", Confidence="0.8")
    # 16:00 in Paris, inside the calling window, and nobody staffs the queue: no time to promise
    assert said(booked) == ("Merci. Nous vous rappellerons au 0 6, 39, 98, 0 0, 0 1 dès qu'un conseiller "
                            "sera disponible, et vous gardez votre place dans la file. Au revoir.")
    assert booked.find("Hangup") is not None

    ended = twilio.post("/voice/status", CallSid=call.sid, CallStatus="completed", CallDuration="95")
    assert ended.status_code == 204

    # she phones again: keep the callback or cancel it?
    again = FrenchCall(twilio, "CAfr-again", CAMILLE)
    pending = again.post("/voice")
    assert said(pending).startswith("Vous avez déjà demandé à être rappelé par le service facturation, "
                                    "et nous vous rappellerons ")
    cancelled = again.answer(pending, SpeechResult="Non, je veux l'annuler.", Confidence="0.9")
    assert said(cancelled).startswith("Votre rappel est annulé. Bonjour Camille, merci d'appeler")


def test_an_unknown_caller_uses_the_keypad(twilio, clock):
    call = FrenchCall(twilio, "CAfr-keys", "+33612345678")
    menu = call.post("/voice")
    assert said(menu).startswith("Bonjour et merci d'appeler Northwind Fibre.")
    assert "Pour l'assistance technique, tapez 3." in said(menu)
    queued = call.answer(menu, Digits="3")
    assert queued.find("Enqueue").text == "assistance_technique"


def test_silence_is_answered_in_french_and_reaches_a_person(twilio, clock):
    call = FrenchCall(twilio, "CAfr-silence", "Anonymous")
    menu = call.post("/voice")
    again = call.answer(menu)
    assert said(again).startswith("Désolé, je n'ai rien entendu. Dites-moi en quelques mots")
    person = call.answer(again)
    assert person.find("Enqueue").text == "accueil"


def test_after_hours_the_caller_hears_when_the_line_opens_and_leaves_a_message(twilio, clock):
    clock(datetime(2026, 11, 24, 21, 0, tzinfo=UTC))  # 22:00 in Paris
    call = FrenchCall(twilio, "CAfr-night", CAMILLE)
    closed = call.post("/voice")
    assert "Nous rouvrons demain à 8 h." in said(closed)
    record = closed.find("Record")
    done = call.post(record.get("action"), RecordingUrl="https://api.twilio.com/rec/RE1",
                     RecordingDuration="12")
    assert said(done) == "Merci de votre appel. Au revoir." and done.find("Hangup") is not None


def test_a_failed_step_apologises_in_the_language_of_the_line_called(twilio, clock):
    call = FrenchCall(twilio, "CAfr-lost", CAMILLE)
    lost = call.post("/voice/gather?s=4", Digits="1")  # no such call: the fail-safe answers
    assert said(lost).startswith("Nous sommes désolés, nous rencontrons des difficultés techniques.")
    assert lost.find("Dial") is not None
