"""A French flow's menu understands French speech through the webhooks: Twilio's
SpeechResult, said in the caller's own words, reaches the right queue; off-topic French falls
back to the menu. Real Flask app, real Redis (tests/conftest.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

FLOW = """\
id: ligne-fr
language: fr-FR
numbers: ["+33180000000"]
start: menu
settings: {escape: conseiller}
intents:
  facturation:
    - j'ai une question sur ma facture
    - ma facture est trop élevée
    - je veux payer ma facture
  technique:
    - internet ne fonctionne plus
    - ma box ne s'allume plus
  conseiller:
    phrases: [je veux parler à quelqu'un]
    keywords: [conseiller]
nodes:
  menu:
    ask:
      prompt: "Dites-nous en quelques mots pourquoi vous appelez."
      announce: false
      choices:
        - {key: 1, intent: facturation, goto: facturation}
        - {key: 2, intent: technique, goto: technique}
        - {key: 0, intent: conseiller, goto: conseiller}
      no_match:
        retries: 1
        say: "Pardon, je n'ai pas compris."
  facturation:
    queue: {name: facturation, say: "Je vous passe le service facturation."}
  technique:
    queue: {name: technique, say: "Je vous passe l'assistance technique."}
  conseiller:
    queue: {name: accueil, say: "Je vous passe un conseiller."}
"""

CALLER = {"From": "+33612345678", "To": "+33180000000"}


@pytest.fixture(autouse=True)
def _open_hours(open_hours):
    pass


@pytest.fixture
def french_line(app, flows_dir):
    (flows_dir / "ligne-fr.yaml").write_text(FLOW, encoding="utf-8")
    registry = app.extensions["ivr"].registry
    registry.reload()
    assert "ligne-fr" in registry.flows
    return app


def parse(response) -> ET.Element:
    assert response.status_code == 200, response.data
    return ET.fromstring(response.data)


def said(root: ET.Element) -> str:
    return " ".join(e.text or "" for e in root.iter("Say"))


def answer(twilio, call: str, speech: str) -> ET.Element:
    menu = parse(twilio.post("/voice", CallSid=call, **CALLER))
    gather = menu.find("Gather")
    assert gather is not None and gather.get("language") == "fr-FR" and "speech" in gather.get("input")
    return parse(twilio.post(gather.get("action"), CallSid=call, SpeechResult=speech, Confidence="0.9"))


@pytest.mark.parametrize(
    ("call", "speech", "queue", "confirmed"),
    [
        # none of the intent's words, only related ones (a debit is a bill's business): the
        # caller is asked to confirm, and pressing 1 goes on
        ("CAfr1", "On m'a débité deux fois ce mois-ci.", "facturation", True),
        ("CAfr2", "Y a plus rien qui marche depuis ce matin, même le wifi.", "technique", False),
        ("CAfr3", "Un conseiller, s'il vous plaît.", "accueil", False),
        ("CAfr5", "Bonjour, euh, c'est au sujet de ma facturation.", "facturation", False),
        # paraphrases with no word of the intents' phrases, no keyword and no synonym of
        # them: understood by meaning (the multilingual model), and confirmed first
        ("CAfr6", "Impossible d'ouvrir la moindre page web depuis hier soir.", "technique", True),
        ("CAfr7", "On me réclame trente euros de plus que d'habitude, je ne comprends pas.",
         "facturation", True),
    ],
)
def test_french_speech_reaches_the_right_queue(french_line, twilio, call, speech, queue, confirmed):
    root = answer(twilio, call, speech)
    asked = root.find("Enqueue") is None
    if asked:
        gather = root.find("Gather")
        assert gather is not None and gather.get("numDigits") == "1", ET.tostring(root)
        root = parse(twilio.post(gather.get("action"), CallSid=call, Digits="1"))
    assert asked == confirmed
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.text == queue, ET.tostring(root)


@pytest.mark.parametrize(
    ("call", "speech"),
    [("CAfr4", "Je voudrais réserver une table pour ce soir."),
     ("CAfr8", "Quel temps fera-t-il demain à Lyon ?"),
     ("CAfr9", "Je cherche la pharmacie de garde.")],
)
def test_off_topic_french_falls_back_to_the_menu(french_line, twilio, call, speech):
    root = answer(twilio, call, speech)
    assert root.find("Enqueue") is None
    assert said(root).startswith("Pardon, je n'ai pas compris.")
    gather = root.find("Gather")
    assert gather is not None and gather.get("language") == "fr-FR"  # asked again
