"""Everything callers, agents and supervisors hear or read, in their language: gettext
message catalogues, and numbers, times, dates and phone numbers said the language's way.

The code is written in English, and its English text is the catalogue's source: `pybabel
extract` collects it into ivr/i18n/locales/messages.pot, and each other language is one
.po file beside it (ivr/i18n/locales/fr/LC_MESSAGES/messages.po). Building or installing
the package (`pip install .`, `pip install -e .`, a wheel) compiles each .po into the .mo
that is read at run time; a .po newer than its .mo (an edit in a checkout) is read as is.

A call speaks its flow's `language` (a `goto_flow` into a flow in another language
changes it): `language("fr-FR")` is the `Language` that says sentences, durations, times
and phone numbers in French, with French the catalogue's fr_FR, then fr, then the English
source for whatever is missing. `ivr flows check` warns, naming the sentence, when a flow
that is not in English would say a sentence its language has no translation for.

Adding a sentence callers or agents hear
----------------------------------------
1. Write it in ivr/i18n/sentences.py, in English, as a `Sentence` (a whole sentence) or
   a `Phrase` (a piece that fills a sentence's {placeholder}, with a context naming its
   role). Placeholders are `{name}`; a count that chooses the plural is `{n}`. A comment
   starting `Translators:` just above it goes into the catalogue for the translator.
2. Say it: `run.lang.say(S.MY_SENTENCE, name=...)` in the engine (`run.say(...)` makes the
   <Say>), `language(flow.language, flow.messages).say(...)` elsewhere. A flow can then
   say it in its own words with `messages: {my_sentence: ...}`; where a node has a field
   for those words, keep doing what the other defaults do: `run.speak(node.x) or
   [run.say(...)]`.
3. If a node kind says it by default, name it in that kind's `speaks` (ivr/flows/nodes),
   so `ivr flows check` can tell operators when their language lacks it.
4. Refresh the catalogues from the repository's root (pybabel extract, update, compile),
   then translate the entries it lists in every .po (a test fails while a shipped
   language lacks one, or a translation's placeholders differ from the English):

       scripts/catalogue

Screens (the dashboard, `ivr report`) use the same catalogues: `_("...")` / `gettext()` in
Python and `{{ _("...") }}` in Jinja templates are extracted into the same messages.pot,
and Flask-Babel reads the same catalogues (`BABEL_TRANSLATION_DIRECTORIES =
ivr.i18n.catalogue.LOCALES`, domain `messages`). Their placeholders are `%(name)s`, as in
Flask; text shown later (a table of labels) is marked `N_("...")`. The reader's language,
time zone and way of writing figures and dates: ivr.i18n.screen (ivr/web/localization.py
for pages). Only ivr/i18n/sentences.py holds what is spoken on calls.

Adding a language
-----------------
    pybabel init -l de          # writes ivr/i18n/locales/de/LC_MESSAGES/messages.po

then translate every entry (the `voice` and `phone number digits` settings too) and
install again (or `pybabel compile`). A region's file (de_AT) needs only what differs
from the language's.
"""

from __future__ import annotations

from .catalogue import LOCALES, Phrase, Sentence, Setting
from .language import Language, language

__all__ = ["LOCALES", "Language", "Phrase", "Sentence", "Setting", "language"]
