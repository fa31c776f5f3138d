"""`ask:` a menu or a question: listen for keys or speech, and go where the answer says."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ivr.errors import suggest
from ivr.i18n import sentences as S

from ..model import Flow, Node, Prompt
from ..prompts import announcement, prompt_seconds, text_seconds
from .kind import NODE_ID, PROMPT, Exit, NodeKind, RawNode


@dataclass(frozen=True)
class Choice:
    goto: str
    key: str | None = None
    label: str | None = None
    intent: str | None = None
    say: Prompt = ()


@dataclass(frozen=True)
class Handler:
    say: Prompt = ()
    goto: str | None = None
    retries: int | None = None
    pressed: Prompt = ()  # no_match only: said after a key that is no choice, instead of `say`
    spoken: Prompt = ()  # no_match only: said after words not understood, instead of `say`

    def words(self, answered: str | None) -> Prompt:
        """What to say after an answer given this way ("pressed", "spoken", None: either)."""
        own = self.pressed if answered == "pressed" else self.spoken if answered == "spoken" else ()
        return own or self.say


@dataclass(frozen=True)
class AskNode(Node):
    prompt: Prompt = ()
    choices: tuple[Choice, ...] = ()
    announce: bool = True
    input: tuple[str, ...] = ("dtmf", "speech")
    num_digits: int | None = None
    finish_on_key: str | None = None
    timeout: int = 5
    speech_timeout: str | int = "auto"
    retries: int | None = None  # per kind of failure; None: only `attempts` limits them
    attempts: int = 3  # prompts in all before the caller is sent on (settings.menu_attempts)
    no_input: Handler = Handler()
    no_match: Handler = Handler()
    save_as: str | None = None
    confirm_below: float | None = None
    escape: str | None = None  # the flow's escape node, filled in by the loader
    language: str = "en-US"  # the flow's, for its announcements' words

    def exits(self) -> tuple[str | None, str | None]:
        """Where the caller goes after the last retry on silence and on no match."""
        silent = self.no_input.goto or self.escape
        unmatched = self.no_match.goto or self.no_input.goto or self.escape
        return silent, unmatched

    def edges(self) -> Iterator[tuple[str, str]]:
        for c in self.choices:
            label = f"press {c.key}" if c.key else ""
            if c.intent:
                label = f"{label} / say {c.intent}" if label else f"say {c.intent}"
            yield (label or "choice", c.goto)
        silent, unmatched = self.exits()
        if silent:
            yield ("no input", silent)
        if unmatched and (self.choices or unmatched != silent):
            yield ("no match", unmatched)
        if self.next:
            yield ("answered", self.next)


_KEY = re.compile(r"^[0-9*#]{1,10}$")


def load(b, raw: RawNode) -> AskNode:
    v, kp, path = raw.value, raw.key_path, raw.path

    def handler(name: str) -> Handler:
        h = v.get(name) or {}
        return Handler(b.prompt(kp + (name, "say"), h.get("say")), h.get("goto"), h.get("retries"),
                       b.prompt(kp + (name, "pressed"), h.get("pressed")),
                       b.prompt(kp + (name, "spoken"), h.get("spoken")))

    choices = tuple(
        Choice(goto=c["goto"], key=str(c["key"]) if "key" in c else None, label=c.get("label"),
               intent=c.get("intent"), say=b.prompt(kp + ("choices", i, "say"), c.get("say")))
        for i, c in enumerate(v.get("choices", []))
    )
    for i, c in enumerate(choices):
        if c.key is not None and not _KEY.match(c.key):  # numbers in YAML skip the schema's pattern
            b.error(kp + ("choices", i, "key"), f"key '{c.key}' cannot be pressed: use 1 to 10 of "
                    "0-9, * and #", code="bad-key")
    if choices and raw.body.get("next") is not None:
        b.error(path + ("next",), "'next' is only for a question without 'choices' (a free answer "
                "saved with save_as); a menu goes where its choices, no_input and no_match say",
                key=True, code="next-on-menu")
    settings = raw.settings
    return AskNode(
        **raw.common, prompt=b.prompt(kp + ("prompt",), v["prompt"]), choices=choices,
        announce=v.get("announce", True), input=tuple(v.get("input", ("dtmf", "speech"))),
        num_digits=v.get("num_digits"), finish_on_key=v.get("finish_on_key"),
        timeout=v.get("timeout", 5), speech_timeout=v.get("speech_timeout", "auto"),
        retries=v.get("retries"), attempts=v.get("attempts", settings.menu_attempts),
        no_input=handler("no_input"), no_match=handler("no_match"),
        save_as=v.get("save_as"), confirm_below=v.get("confirm_below", settings.confirm_below),
        escape=settings.escape, language=raw.language,
    )


def resolve(b, flow: Flow, node: AskNode) -> None:
    ap = ("nodes", node.id, "ask")
    keys: dict[str, int] = {}
    for i, c in enumerate(node.choices):
        cp = ap + ("choices", i)
        b.target(flow, cp + ("goto",), c.goto)
        if c.intent and c.intent not in flow.intents:
            b.error(cp + ("intent",), f"intent '{c.intent}' is not declared under "
                    f"'intents'{suggest(c.intent, flow.intents)}", code="missing-intent")
        if c.key is not None:
            if c.key in keys:
                b.error(cp + ("key",), f"key {c.key} is already used by choice "
                        f"{keys[c.key] + 1} of this menu", code="duplicate-key")
            keys[c.key] = i
            if node.num_digits and len(c.key) != node.num_digits:
                b.error(cp + ("key",), f"key '{c.key}' has {len(c.key)} digits but the menu "
                        f"waits for num_digits: {node.num_digits}", code="key-length")
        if c.key is None and c.intent is None:
            b.error(cp, "a choice needs a 'key', an 'intent', or both", code="choice")
        if c.key is not None and not c.label and node.announce:
            b.warn(cp, f"choice for key {c.key} has no 'label', so it cannot be announced "
                   "('for <label>, press <key>')", code="no-label")
    for h in ("no_input", "no_match"):
        b.target(flow, ap + (h, "goto"), getattr(node, h).goto)
    if "dtmf" not in node.input:
        b.warn(ap + ("input",), "this menu does not take the keypad; callers whose speech is "
               "not understood have no other way through", code="no-keypad")


def check(c, node: AskNode) -> None:
    flow = c.flow
    silent, unmatched = node.exits()
    if not silent:
        c.at(node, f"menu '{node.id}' has no way out when the caller says nothing: set "
             "no_input.goto, or settings.escape for the whole flow", code="silent-menu")
    elif c.leads_back(silent, node.id) and node.no_input.goto is None:
        c.at(node, f"menu '{node.id}' sends a silent caller back to itself through "
             f"settings.escape ('{silent}'), where the retries start again: they would hear it "
             "forever. Point settings.escape at a person, or give this menu a no_input.goto "
             "that leads out", code="silent-menu")
    elif c.leads_back(silent, node.id):
        c.at(node, f"menu '{node.id}' sends a silent caller back to itself, where the retries "
             "start again: they would hear it forever. Leave no_input.goto out to ask again "
             "(up to `retries` times), then send them on, e.g. to a person", code="silent-menu")
    elif node.choices and not unmatched:
        c.at(node, f"menu '{node.id}' has no way out when the caller is not understood: "
             "set no_match.goto", code="no-match-exit")
    for name in ("no_input", "no_match"):
        retries = getattr(node, name).retries
        retries = node.retries if retries is None else retries
        if retries is not None and retries + 1 > node.attempts:
            c.at(node, f"{name} retries {retries} cannot all be used: the menu is played "
                 f"{node.attempts} times in all (attempts, settings.menu_attempts) before the "
                 "caller is sent on", "warning", "retries-over-attempts")
    listens = flow.settings.speech != "off" and "speech" in node.input
    for i, choice in enumerate(node.choices):
        if choice.key is None and not listens:
            c.at(node, f"the choice for intent '{choice.intent}' has no key, and this menu does not "
                 "listen for speech (settings.speech: off, or input without speech): no caller "
                 "can choose it; give it a key", "warning", "unreachable-choice",
                 sub=(node.kind, "choices", i))
    if not node.choices and not node.next:
        c.at(node, f"'{node.id}' asks for input but has no choices and no 'next': where does "
             "the caller go after answering?", code="dead-end")
    if node.id in c.reachable and node.id not in c.reaches_a_person:
        c.at(node, f"menu '{node.id}' offers no way to reach a person (no path to a queue "
             "or transfer); callers stuck here will hang up", "warning", "no-person")


def exits(node: AskNode, wpm: int, mode: str, speech: bool) -> list[Exit]:
    heard = prompt_seconds(node.prompt, wpm)
    out = []
    spoken = 0.0
    for c in node.choices:
        text = announcement(c, node.language) if node.announce else None
        if text:
            spoken += text_seconds(text, wpm)
        if mode == "keypad" and c.key is not None and "dtmf" in node.input:
            out.append(Exit(f"press {c.key}", c.goto, heard + spoken, 1))
        if mode == "speech" and speech and c.intent and "speech" in node.input:
            out.append(Exit(f"say '{c.intent}'", c.goto, heard, 1))
    if node.next:
        out.append(Exit("answer", node.next, heard, 1))
    return out


def speaks(flow: Flow, node: AskNode):
    """The catalogue's sentences a menu says when the flow gives no words of its own."""
    if not node.no_input.say:
        yield S.NOT_HEARD, ("no_input", "say")
    if not (node.no_match.say or node.no_match.pressed) and any(c.key for c in node.choices):
        yield S.NOT_A_CHOICE, ("no_match", "pressed")
    if not (node.no_match.say or node.no_match.spoken):
        yield S.NOT_UNDERSTOOD, ("no_match", "spoken")
    if node.announce and any(c.key is not None and c.label for c in node.choices):
        yield S.MENU_CHOICE, ("announce",)
        if any(k in (c.key or "") for c in node.choices for k in "*#"):
            yield from ((S.KEY_STAR, ("announce",)), (S.KEY_POUND, ("announce",)))
    if "speech" in node.input and flow.settings.speech != "off" and any(c.intent for c in node.choices):
        yield from ((S.CONFIRM_CHOICE, ("choices",)), (S.YES_WORDS, ("choices",)),
                    (S.NO_WORDS, ("choices",)))


def label(flow: Flow, node: AskNode) -> str:
    return f"~{prompt_seconds(node.prompt, flow.settings.words_per_minute):.0f} s"


SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": PROMPT,
        "choices": {"type": "array", "items": {"$ref": "#/$defs/choice"}},
        "announce": {"type": "boolean",
                     "description": "Announce keypad choices after the prompt (default true)."},
        "input": {"type": "array", "items": {"enum": ["dtmf", "speech"]}, "minItems": 1, "uniqueItems": True},
        "num_digits": {"type": "integer", "minimum": 1, "maximum": 20},
        "finish_on_key": {"type": "string", "pattern": "^[0-9*#]?$"},
        "timeout": {"type": "integer", "minimum": 1, "maximum": 60},
        "speech_timeout": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": 60}]},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10,
                    "description": "Retries after silence, and after a wrong answer, counted apart (a "
                                   "handler's own retries wins); within attempts."},
        "attempts": {"type": "integer", "minimum": 1, "maximum": 10,
                     "description": "How many times the menu is played in all, silences and wrong "
                                    "answers together, before the caller is sent on (default "
                                    "settings.menu_attempts, 3)."},
        "no_input": {"$ref": "#/$defs/handler"},
        "no_match": {"$ref": "#/$defs/no_match"},
        "save_as": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "confirm_below": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["prompt"],
    "additionalProperties": False,
}
HANDLER = {
    "type": "object",
    "description": "What happens when the caller says nothing (no_input) or something that matches no "
                   "choice (no_match).",
    "properties": {"say": PROMPT, "goto": NODE_ID,
                   "retries": {"type": "integer", "minimum": 0, "maximum": 10}},
    "additionalProperties": False,
}
NO_MATCH = {
    "type": "object",
    "description": "What happens when the caller presses a key that is no choice, or says something "
                   "that matches none.",
    "properties": {"say": {**PROMPT, "description": "Said after either (unless pressed or spoken "
                                                    "says it for that way of answering)."},
                   "pressed": {**PROMPT, "description": "Said after a key that is no choice."},
                   "spoken": {**PROMPT, "description": "Said after words that match no choice "
                                                       "(the place to mention the keypad)."},
                   "goto": NODE_ID, "retries": {"type": "integer", "minimum": 0, "maximum": 10}},
    "additionalProperties": False,
}
CHOICE = {
    "type": "object",
    "properties": {
        "key": {"type": ["string", "integer"], "pattern": "^[0-9*#]{1,10}$",
                "description": "Keypad digits for this choice."},
        "label": {"type": "string",
                  "description": "Words used in the announcement: 'for <label>, press <key>'."},
        "intent": {"type": "string", "description": "Intent (declared under intents) that routes here "
                                                    "when the caller says it."},
        "say": PROMPT,
        "goto": NODE_ID,
    },
    "required": ["goto"],
    "additionalProperties": False,
}

KIND = NodeKind("ask", AskNode, SCHEMA, load,
                defs={"handler": HANDLER, "no_match": NO_MATCH, "choice": CHOICE},
                resolve=resolve, check=check, exits=exits, speaks=speaks, waits=True,
                intents=lambda node: [c.intent for c in node.choices if c.intent], mermaid=("{{", "}}"),
                dot="hexagon", label=label)
