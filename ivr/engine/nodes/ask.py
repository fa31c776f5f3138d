"""`ask:` a menu or a question. The caller answers with keys or words; silence and answers
that match nothing are asked again, then sent on; an unsure speech match is confirmed."""

from __future__ import annotations

from typing import Any

from ivr.flows.nodes.ask import AskNode
from ivr.flows.prompts import announcements
from ivr.i18n import sentences as S

from .. import actions as A
from .. import events as E
from ..context import Match
from ..kind import STOP, NodeKind
from ..states import Wait
from ..wording import yes_no, yes_no_hints


def enter(run, node: AskNode):
    ask(run, node, [])
    return STOP


def ask(run, node: AskNode, before: list, log: bool = True, event: str = "enter") -> None:
    prompts = before + run.speak(node.prompt)
    prompts += [run.say_text(t) for t in announcements(node, run.lang)]
    run.actions.append(A.Gather(
        prompts=tuple(prompts), input=inputs(run, node), num_digits=node.num_digits or _digits(node),
        timeout=node.timeout, speech_timeout=node.speech_timeout,
        finish_on_key=_finish_key(node), hints=hints(run, node), language=run.flow.language,
    ))
    run.state["wait"] = Wait.ASK
    if log:
        run.step(node, event, prompts, action="gather")


def inputs(run, node: AskNode) -> tuple[str, ...]:
    if run.flow.settings.speech == "off":
        return ("dtmf",)
    return node.input


def hints(run, node: AskNode) -> tuple[str, ...]:
    """Words and phrases callers are likely to say here, to help Twilio's recognizer."""
    words: list[str] = []
    for c in node.choices:
        if c.label:
            words.append(c.label)
        intent = run.flow.intents.get(c.intent) if c.intent else None
        if intent:
            words += list(intent.keywords) + list(intent.phrases)
    return tuple(dict.fromkeys(w[:100] for w in words if w))[:500]


def on_answer(run, node: AskNode, event: E.Event) -> None:
    s = run.state
    if isinstance(event, E.NoInput):
        retry(run, node, "no_input")
        return
    if not node.choices:  # a question with a free answer: keep it and move on
        value = event.digits if isinstance(event, E.Digits) else event.text
        if node.save_as:
            s["vars"][node.save_as] = value
        log_input(run, node, event, detail={"saved_as": node.save_as})
        run.goto(node.next)
        return
    if isinstance(event, E.Digits):
        choice = next((c for c in node.choices if c.key == event.digits), None)
        if choice is None:
            log_input(run, node, event, no_match=True)
            retry(run, node, "no_match", logged=True, pressed=event.digits)
            return
        if choice.intent:
            s["intent"] = choice.intent
        choose(run, node, event, choice)
        return
    found = match(run, event.text)
    by_intent = {c.intent: c for c in node.choices if c.intent}
    choice = by_intent.get(found.intent) if found.intent else None
    if choice is None:
        log_input(run, node, event, match=found, no_match=True)
        retry(run, node, "no_match", logged=True)
        return
    s["intent"], s["conf"] = found.intent, round(float(found.confidence), 3)
    threshold = node.confirm_below
    unsure = found.needs_confirmation or (threshold is not None and found.confidence < threshold)
    if unsure:
        log_input(run, node, event, match=found, detail={"confirm": choice.goto})
        s["confirm"] = {"intent": found.intent, "choice": node.choices.index(choice),
                        "text": event.text}
        question = run.say(S.CONFIRM_CHOICE, label=choice.label or found.intent.replace("_", " "))
        run.actions.append(A.Gather(prompts=(question,), input=inputs(run, node), num_digits=1,
                                    timeout=node.timeout, hints=yes_no_hints(run.lang),
                                    language=run.flow.language))
        s["wait"] = Wait.CONFIRM
        return
    choose(run, node, event, choice, found)


def choose(run, node: AskNode, event: E.Event, choice, found: Match | None = None,
           log: bool = True) -> None:
    if node.save_as:
        run.state["vars"][node.save_as] = (
            event.digits if isinstance(event, E.Digits) else event.text)
    if log:
        log_input(run, node, event, match=found, detail={"goto": choice.goto, "key": choice.key})
    run.actions += run.speak(choice.say)
    run.goto(choice.goto)


def on_confirm(run, node: AskNode, event: E.Event) -> None:
    pending = run.state.pop("confirm", None) or {}
    yes = yes_no(event, run.lang) == "yes"
    run.step(node, "confirm", digits=getattr(event, "digits", None),
             speech=getattr(event, "text", None), intent=pending.get("intent"),
             detail={"confirmed": yes})
    index = pending.get("choice")
    if yes and index is not None and index < len(node.choices):
        # what the caller first said is the answer, not the "yes"
        choose(run, node, E.Speech(pending.get("text", ""), None), node.choices[index], log=False)
        return
    run.state["intent"] = None
    retry(run, node, "no_input" if isinstance(event, E.NoInput) else "no_match", logged=True)


def match(run, text: str) -> Match:
    if run.ctx.match is None:
        return Match(None, 0.0)
    m = run.ctx.match(run.flow, text)
    return Match(getattr(m, "intent", None), float(getattr(m, "confidence", 0.0) or 0.0),
                 bool(getattr(m, "needs_confirmation", False)))


def log_input(run, node: AskNode, event: E.Event, match: Match | None = None,
              no_match: bool = False, detail: dict | None = None) -> None:
    fields: dict[str, Any] = {"detail": detail}
    if isinstance(event, E.Digits):
        fields["digits"] = event.digits
    elif isinstance(event, E.Speech):
        fields["speech"] = event.text
        fields["confidence"] = event.confidence
    if match is not None:
        fields["intent"] = match.intent
        fields["detail"] = {**(detail or {}), "intent_confidence": round(match.confidence, 3)}
    run.step(node, "no_match" if no_match else E.NAMES[type(event)], **fields)


def retry(run, node: AskNode, why: str, logged: bool = False, pressed: str | None = None) -> None:
    """Ask again after silence or an answer that matched nothing, or send the caller on.

    The apology fits the answer: after a key that is no choice (`pressed`, the keys), not
    the advice for callers whose words were not understood ("you can also use the keypad")."""
    s = run.state
    handler = node.no_input if why == "no_input" else node.no_match
    answered = None if why == "no_input" else "pressed" if pressed is not None else "spoken"
    words = handler.words(answered)
    limit = handler.retries if handler.retries is not None else node.retries
    tries = s.get("tries") if isinstance(s.get("tries"), dict) else {}
    tries[why] = tries.get(why, 0) + 1
    s["tries"] = tries
    silent_exit, unmatched_exit = node.exits()
    # One budget for the menu: each silence or wrong answer followed a prompt, and the caller
    # hears at most `attempts` prompts in all (two wrong keys then silence is three, not four).
    heard = tries.get("no_input", 0) + tries.get("no_match", 0)
    if heard >= node.attempts or (limit is not None and tries[why] > limit):
        target = silent_exit if why == "no_input" else unmatched_exit
        if not logged:
            run.step(node, why, detail={"gave_up": True, "goto": target})
        run.actions += run.speak(words) if words else []
        run.goto(target)
        return
    if words:
        sorry = run.speak(words)
    elif why == "no_input":
        sorry = [run.say(S.NOT_HEARD)]
    elif pressed is not None:
        sorry = [run.say(S.NOT_A_CHOICE, keys=run.lang.keys(pressed))]
    else:
        sorry = [run.say(S.NOT_UNDERSTOOD)]
    if not logged:
        run.step(node, why, detail={"try": tries[why]})
    ask(run, node, sorry, event="reprompt")


def repeat(run, node: AskNode, wait: Wait) -> None:
    ask(run, node, [], log=False)


def _finish_key(node: AskNode) -> str | None:
    # Twilio ends input on '#' by default, which would swallow a menu choice of '#'.
    if node.finish_on_key is None and any("#" in (c.key or "") for c in node.choices):
        return ""
    return node.finish_on_key


def _digits(node: AskNode) -> int | None:
    # Single-key menus should not wait for the Gather timeout after the key press.
    keys = [c.key for c in node.choices if c.key]
    if keys and all(len(k) == 1 for k in keys):
        return 1
    return None


_ANSWERS = (E.Digits, E.Speech, E.NoInput)

KIND = NodeKind(enter, events={Wait.ASK: dict.fromkeys(_ANSWERS, on_answer),
                               Wait.CONFIRM: dict.fromkeys(_ANSWERS, on_confirm)},
                repeat=repeat)
