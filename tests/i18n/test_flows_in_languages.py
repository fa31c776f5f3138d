"""Flows in other languages: `ivr flows check` names the sentences a flow's language lacks,
a goto_flow changes the language a call speaks, and the whisper, the fail-safe and the
built-in callback greeting are said in the flow's language."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.pofile import read_po, write_po

from ivr.engine import actions as A
from ivr.engine import events as E
from ivr.engine.simulation import SimulatedCall
from ivr.flows.checker import check_flow
from ivr.flows.loader import load_flow_text
from ivr.i18n import catalogue
from ivr.i18n import sentences as S
from ivr.i18n.language import clear_cache

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)

MENU = """
id: {id}
language: {language}
start: menu
settings: {{escape: people}}
nodes:
  menu:
    ask:
      prompt: "{prompt}"
      choices:
        - {{key: 1, label: "{label}", goto: people}}
  people:
    queue: {{name: people, announce_wait: true}}
    next: bye
  bye:
    hangup: "{bye}"
"""


def flow(language: str, **extra) -> object:
    values = dict(id="line", language=language, prompt="Hallo.", label="Rechnungen", bye="Tschüss.")
    values.update(extra)
    return load_flow_text(MENU.format(**values), "line.yaml", values["id"])


def warnings(f) -> list[str]:
    return [str(p) for p in check_flow(f) if p.code == "untranslated"]


def test_english_and_french_flows_lack_nothing():
    assert warnings(flow("en-US")) == []
    assert warnings(flow("fr-FR")) == []
    example = load_flow_text((ROOT / "flows" / "assistance.yaml").read_text("utf-8"), "assistance.yaml",
                             "assistance")
    assert warnings(example) == []


def test_a_language_without_a_catalogue_is_named_with_the_sentences_callers_would_hear():
    [warning] = warnings(flow("de-DE"))
    assert warning.startswith("line.yaml:3:11: warning: there is no message catalogue for 'de-DE': "
                              "callers would hear ")
    assert "\"Sorry, I didn't hear anything.\"" in warning and "pybabel init -l de" in warning


@pytest.fixture
def german(tmp_path, monkeypatch):
    """An operator's German catalogue in IVR_LOCALES_DIR that translates everything but the
    apology for silence and the estimated wait."""
    with catalogue.TEMPLATE.open("rb") as f:
        cat = read_po(f)
    cat.locale = "de"
    left_out = {S.NOT_HEARD.msgid, S.WAIT_IS.msgid}
    for m in cat:
        if m.id and (m.id if isinstance(m.id, str) else m.id[0]) not in left_out:
            m.string = ("DE " + m.id[0], "DE " + m.id[1]) if isinstance(m.id, tuple) else "DE " + m.id
    folder = tmp_path / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with (folder / "messages.po").open("wb") as f:
        write_po(f, cat)
    monkeypatch.setenv(catalogue.EXTRA_LOCALES_ENV, str(tmp_path))
    clear_cache()
    yield
    monkeypatch.delenv(catalogue.EXTRA_LOCALES_ENV)
    clear_cache()


def test_each_sentence_a_language_lacks_is_named_where_the_flow_could_say_it_itself(german):
    found = warnings(flow("de-DE"))
    assert found == [
        "line.yaml:9:7: warning: callers of this 'de-DE' flow would hear \"Sorry, I didn't hear anything.\" "
        "in English: the 'de' catalogue has no translation of it; translate it in "
        "ivr/i18n/locales/de/LC_MESSAGES/messages.po (or a catalogue in IVR_LOCALES_DIR), or give the "
        "flow its own words here or in messages.not_heard",
        "line.yaml:13:42: warning: callers of this 'de-DE' flow would hear "
        "\"Your estimated wait is {wait}.\" in English: the 'de' catalogue has no translation of "
        "it; translate it in ivr/i18n/locales/de/LC_MESSAGES/messages.po (or a catalogue in "
        "IVR_LOCALES_DIR), or give the flow its own words here or in messages.wait_is"]
    # the flow's own words for silence: nothing to translate there any more
    text = MENU.format(id="line", language="de-DE", prompt="Hallo.", label="x", bye="y")
    text = text.replace('prompt: "Hallo."', 'prompt: "Hallo."\n      no_input: {say: "Bitte?"}')
    own = load_flow_text(text, "line.yaml", "line")
    assert [w for w in warnings(own) if "didn't hear" in w] == []


def test_a_goto_flow_into_a_french_flow_speaks_french_from_there():
    english = load_flow_text("""
id: front
language: en-US
start: hello
nodes:
  hello:
    say: "Hello."
    next: french
  french:
    goto_flow: {flow: line}
""", "front.yaml", "front")
    french = flow("fr-FR", prompt="Bonjour.", label="la facturation", bye="Au revoir.")
    call = SimulatedCall(english, "Anonymous", flows={"front": english, "line": french}, now=NOW)
    first = call.start()
    assert first.said == "Hello. Bonjour. Pour la facturation, tapez 1."
    gather = next(a for a in first.actions if isinstance(a, A.Gather))
    assert gather.language == "fr-FR"
    assert [(p.voice, p.language) for p in gather.prompts] == [("Polly.Lea-Neural", "fr-FR")] * 2
    assert first.actions[0] == A.Say("Hello.", "Polly.Joanna-Neural", "en-US")
    assert call.send(E.NoInput()).said.startswith("Désolé, je n'ai rien entendu. Bonjour.")


TRANSFER = """
id: transfert
language: fr-FR
start: passer
intents:
  facturation: [ma facture]
nodes:
  passer:
    transfer: {to: "{{ caller.manager }}"}
"""


def test_the_agent_hears_the_whisper_and_the_caller_the_fail_safe_in_the_flow_s_language():
    f = load_flow_text(TRANSFER, "transfert.yaml", "transfert")
    known = SimulatedCall(f, "+33639980001", now=NOW, caller={
        "known": True, "full_name": "Camille Martin", "customer_id": "F2001", "manager": "+33185000042"})
    dial = known.start().actions[-1]
    assert dial.whisper == "Appel : Camille Martin, client F 2 0 0 1."
    unknown = SimulatedCall(f, "+33612345678", now=NOW, caller={"known": False, "manager": "+33185000042"})
    assert unknown.start().actions[-1].whisper == "Appel : un numéro inconnu, le 0 6, 12, 34, 56, 78."
    nobody = SimulatedCall(f, "+14155550100", now=NOW, caller={"known": False})  # no number to dial
    said = nobody.start().said
    assert said == ("Nous sommes désolés, un problème est survenu de notre côté. Merci de laisser un "
                    "message après le bip.")


def test_the_built_in_callback_greeting_speaks_the_language_the_callback_was_booked_in():
    from callbacks.web import builtin_flow, builtin_for

    greeting = builtin_flow("fr-FR")
    assert greeting.language == "fr-FR" and builtin_for(greeting.id) is greeting
    call = SimulatedCall(greeting, "+33639980001", now=NOW, caller={"known": True, "first_name": "Camille"})
    assert call.start().said.startswith("Bonjour Camille. Voici le rappel que vous avez demandé.")
    assert builtin_for("callback_builtin").language == "en-US"


def test_a_flow_says_any_catalogue_sentence_in_its_own_words(german):
    text = MENU.format(id="line", language="de-DE", prompt="Hallo.", label="Rechnungen", bye="y")
    f = load_flow_text(text + """messages:
  not_heard: "Wie bitte? Ich habe nichts gehört."
  wait_is: "Sie warten noch {wait}."
""", "line.yaml", "line")
    assert warnings(f) == []
    call = SimulatedCall(f, "Anonymous", now=NOW)
    call.start()
    assert call.send(E.NoInput()).said.startswith("Wie bitte? Ich habe nichts gehört. Hallo.")


def test_a_flow_s_own_words_must_name_a_sentence_and_its_placeholders():
    from ivr.errors import FlowError

    text = MENU.format(id="line", language="fr-FR", prompt="Bonjour.", label="x", bye="y")
    with pytest.raises(FlowError) as bad:
        load_flow_text(text + """messages:
  not_herd: "Pardon ?"
  position: "Vous êtes {rang}e."
""", "line.yaml", "line")
    assert [str(p) for p in bad.value.problems] == [
        "line.yaml:18:3: error: no sentence is called 'not_herd' (did you mean 'not_heard'?); the names "
        "are those of ivr/i18n/sentences.py in lower case",
        "line.yaml:19:13: error: 'position' has no {rang}; it may use {position}"]
