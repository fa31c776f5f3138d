"""The callback dialogue: a caller on hold takes a callback instead, and keeps their place.

    offer          while the wait is long, the hold music offers a callback (a key or words)
    on_hold_answer the caller asks for it: they leave Twilio's queue, not the line
    begin, prompt  confirm the number on file, or enter another and hear it read back
    on_answer      ...then record a short reason, if the queue asks for one
    book           the callback is requested (ordered by when they first joined the queue)
    ask_pending    a caller with a callback booked phones again: keep it or cancel it?

The call waits in Wait.CALLBACK at the queue node while these questions are asked (the
queue node's kind hands those events here) and in Wait.PENDING_CALLBACK at the flow's
start for the keep-or-cancel question. `state["cb"]` holds where the questions are:
{"phase": "leaving" | "confirm" | "enter" | "read_back" | "reason" | "booked", "number"...}.
"""

from __future__ import annotations

from typing import Any

from ivr.flows.nodes.queue import CallbackOffer, QueueNode
from ivr.i18n import sentences as S
from ivr.phone import normalize, normalize_typed

from . import actions as A
from . import events as E
from .states import Outcome, Wait
from .wording import says, whole, words, yes_no, yes_no_hints

# Every sentence here can be replaced in the flow (queue.callback.offer, confirm...,
# callbacks.pending...); the defaults are the catalogue's (ivr.i18n.sentences).
CALLBACK_TRIES = 2  # wrong or missing answers in the callback questions before going back in line

# What the callback questions listen to (anything but a hang-up, which `hung_up` handles).
EVENTS = (E.Digits, E.Speech, E.NoInput, E.RecordingDone, E.QueueWait, E.QueueLeft, E.TransferEnded)

_DEFAULT_OFFER = CallbackOffer()


def callback_vars(run, node: QueueNode, est=None) -> dict:
    """`callback.*` for the wording of offers and questions."""
    offer = node.callback
    cb = run.state.get("cb") or {}
    number = cb.get("number") or ""
    key = offer.key if offer else "1"
    wait = est.wait_s if est is not None else None
    lang = run.lang
    return {"key": key, "key_words": lang.key(key), "queue": node.name,
            "number": number, "number_spoken": lang.phone(number, run.region),
            "wait": lang.duration(wait) if wait is not None else "",
            "when": lang.when(wait), "position": est.position if est is not None else None}


def phrases(run, offered: CallbackOffer) -> tuple[str, ...]:
    """What a caller on hold says to ask for a callback: the queue's, else the language's."""
    return offered.phrases or run.lang.words(S.CALL_ME_BACK_WORDS)


# -- on hold ------------------------------------------------------------------------------


def offer(run, node: QueueNode, est, again: bool = False) -> list | None:
    """The offer for this wait cycle (prompts), or None when none is made: the queue offers
    none, the wait is short, or the caller was told we cannot call them back or has one.
    `again`: the caller heard the whole offer on an earlier cycle, so the default is shorter."""
    s = run.state
    if not (node.callback and est is not None and est.longer_than(node.callback.offer_after)
            and not s.get("no_callback")  # told we cannot call them back
            and not s.get("pending_cb")):  # one is booked already
        return None
    run.cbv = callback_vars(run, node, est)
    return run.speak(node.callback.offer) or [run.say(
        S.CALLBACK_OFFER_AGAIN if again else S.CALLBACK_OFFER, key=run.cbv["key_words"],
        phrase=(phrases(run, node.callback) or ("",))[0])]


def on_hold_answer(run, node: QueueNode, event: E.Event) -> None:
    """A key press or words during the hold music: a request for a callback, or nothing."""
    offered = node.callback
    digits = event.digits if isinstance(event, E.Digits) else None
    text = words(event.text) if isinstance(event, E.Speech) else ""
    accepted = offered is not None and (
        (digits is not None and digits[:1] == offered.key)
        or (bool(text) and says(text, phrases(run, offered))))
    run.step(node, "callback_offer", digits=digits,
             speech=event.text if isinstance(event, E.Speech) else None,
             detail={"accepted": accepted})
    if accepted:
        run.state["cb"] = {"phase": "leaving"}
        run.actions.append(A.LeaveQueue())  # Twilio then reports QueueResult=leave


def left_queue(run, node: QueueNode, event: E.QueueLeft) -> bool:
    """The caller left Twilio's queue after asking for a callback: the questions begin (or
    they hung up). False when they did not ask, and the queue goes on as usual."""
    if (run.state.get("cb") or {}).get("phase") != "leaving" or event.result == "bridged":
        return False
    if event.result == "hangup":
        run.state.update(outcome=Outcome.ABANDONED, wait=Wait.ENDED, line=None)
        run.actions.append(A.Hangup())
        return True
    begin(run, node)
    return True


# -- the questions ------------------------------------------------------------------------


def begin(run, node: QueueNode) -> None:
    """Out of Twilio's queue (the line keeps the caller's place): confirm the number to call."""
    s = run.state
    number = normalize(s["caller"].get("phone") or s["from"] or None, run.region)
    s["wait"] = Wait.CALLBACK
    s["tries"] = {}
    s["cb"] = {"phase": "confirm", "number": number} if number else {"phase": "enter"}
    prompt(run, node, [])


def prompt(run, node: QueueNode, before: list, log: bool = True) -> None:
    """Ask the question of the current phase."""
    offered = node.callback or _DEFAULT_OFFER
    phase = run.state["cb"]["phase"]
    run.cbv = callback_vars(run, node)
    number = run.cbv["number_spoken"]
    if phase == "reason":
        said = before + (run.speak(offered.reason) or [run.say(S.ASK_REASON)])
        run.actions += said + [A.Record(offered.reason_max_length, "#", True, 3)]
        if log:
            run.step(node, "callback_question", said, action="record", detail={"phase": phase})
        return
    if phase == "enter":
        prompts = before + (run.speak(offered.enter_number) or [run.say(S.ENTER_NUMBER)])
        gather = A.Gather(prompts=tuple(prompts), input=("dtmf",), timeout=10, finish_on_key="#",
                          language=run.flow.language)
    else:
        custom = offered.confirm if phase == "confirm" else offered.read_back
        default = S.CONFIRM_NUMBER if phase == "confirm" else S.READ_BACK
        prompts = before + (run.speak(custom) or [run.say(default, number=number)])
        gather = A.Gather(prompts=tuple(prompts), input=run.yes_no_inputs(), num_digits=1,
                          timeout=6, hints=yes_no_hints(run.lang), language=run.flow.language)
    run.actions.append(gather)
    if log:
        run.step(node, "callback_question", prompts, action="gather", detail={"phase": phase})


def on_answer(run, node: QueueNode, event: E.Event) -> None:
    """The caller's answer to the current question."""
    s = run.state
    cb = s["cb"]
    phase = cb.get("phase")
    fields = {"digits": getattr(event, "digits", None), "speech": getattr(event, "text", None)}
    if phase == "reason":
        if isinstance(event, E.RecordingDone):
            cb["reason_url"] = event.url
            step = run.step(node, "recording", action="recorded", detail={
                "url": event.url, "duration": event.duration, "callback_reason": True})
            cb["reason_seq"] = step["seq"]
            book(run, node)
        else:
            run.step(node, "unexpected", detail={"event": E.NAMES.get(type(event), "?"),
                                                 "waiting_for": Wait.CALLBACK})
            prompt(run, node, [], log=False)
        return
    if phase == "enter":
        number = (normalize_typed(event.digits, run.region)
                  if isinstance(event, E.Digits) else None)
        run.step(node, "callback_number", **fields, detail={"valid": bool(number)})
        if number:
            s["cb"] = {"phase": "read_back", "number": number}
            prompt(run, node, [])
        else:
            retry(run, node, S.NOT_HEARD if isinstance(event, E.NoInput) else S.NOT_A_NUMBER)
        return
    answer = yes_no(event, run.lang)
    run.step(node, "callback_confirm", **fields, detail={"phase": phase, "answer": answer})
    if answer == "yes":
        if (node.callback or _DEFAULT_OFFER).reason is not None:
            cb["phase"] = "reason"
            prompt(run, node, [])
        else:
            book(run, node)
    elif answer == "no":
        s["cb"] = {"phase": "enter"}
        prompt(run, node, [])
    else:
        retry(run, node, S.NOT_HEARD if isinstance(event, E.NoInput) else S.NOT_UNDERSTOOD)


def retry(run, node: QueueNode, sorry: S.Sentence) -> None:
    tries = run.state.get("tries") if isinstance(run.state.get("tries"), dict) else {}
    tries["callback"] = tries.get("callback", 0) + 1
    run.state["tries"] = tries
    if tries["callback"] > CALLBACK_TRIES:
        # No callback after all: back in the queue, with the place the caller already had.
        run.actions.append(run.say(S.BACK_IN_LINE))
        run.goto(node.id)
        return
    prompt(run, node, [run.say(sorry)])


def hung_up(run, node: QueueNode) -> None:
    """The caller hung up during the questions: after confirming the number, recording the
    reason is the last step, so hanging up on it books the callback."""
    if (run.state.get("cb") or {}).get("phase") == "reason":
        book(run, node, aloud=False)


def book(run, node: QueueNode, aloud: bool = True) -> None:
    """The caller confirmed a number: book the callback and end the call politely."""
    s = run.state
    offered = node.callback or _DEFAULT_OFFER
    cb = s["cb"]
    est = run.estimate(node.name)
    run.cbv = callback_vars(run, node, est)
    opens = calling_opens(run, cb["number"], offered)
    if opens is None:
        # Nobody may call them before the request expires (late evening where they are):
        # no promise we cannot keep; they keep their place in the queue instead.
        run.step(node, "callback_refused", detail={"number": cb["number"], "why": "calling_hours"})
        if not aloud:  # they hung up (after recording a reason): nobody to put back in line
            return
        run.actions.append(run.say(S.NO_CALLING_TIME, number=run.cbv["number_spoken"]))
        s["no_callback"] = True
        run.goto(node.id)
        return
    if opens > ((est.wait_s if est is not None else None) or 0):
        run.cbv["when"] = run.lang.when(opens)  # the window opens later than their turn comes

    said = (run.speak(offered.booked) or [run.say(
        S.BOOKED, number=run.cbv["number_spoken"], when=run.cbv["when"])]) if aloud else []
    since = (s.get("line") or {}).get("since") or run.at
    run.actions.append(A.RequestCallback(
        number=cb["number"], queue=node.name, enqueued_at=since, flow=offered.flow,
        reason_url=cb.get("reason_url"), reason_seq=cb.get("reason_seq"),
        max_attempts=offered.max_attempts, retry_after=offered.retry_after,
        expire_after=offered.expire_after, calling_hours=offered.calling_hours))
    run.actions += said + [A.Hangup()]
    s.update(outcome=Outcome.CALLBACK, wait=Wait.ENDED, line=None)
    cb["phase"] = "booked"
    run.step(node, "callback_requested", said, action="callback", detail={
        "number": cb["number"], "queue": node.name, "enqueued_at": since,
        "estimated_wait": whole(est.wait_s if est is not None else None),
        "reason_url": cb.get("reason_url")})


def calling_opens(run, number: str, offered: Any) -> float | None:
    """Seconds until `number` may be called back (0 when unknown: no calling window here)."""
    if run.ctx.calling_opens is None:
        return 0.0
    try:
        return run.ctx.calling_opens(number, offered.calling_hours, offered.expire_after)
    except Exception as exc:  # not knowing the window must not cost the caller their callback
        run.unless_propagating(exc)
        return 0.0


# -- a caller with a pending callback phones again ----------------------------------------


def ask_pending(run) -> bool:
    """At the start of a call: ask about the caller's pending callback, if they have one."""
    s = run.state
    if not (run.flow.callbacks.recognise and run.ctx.pending_callback and s["from"]):
        return False
    try:
        pending = run.ctx.pending_callback(s["from"])
    except Exception as exc:  # not knowing about the callback must not stop the call
        run.unless_propagating(exc)
        pending = None
    if not pending:
        return False
    s["pending_cb"] = {"id": pending["id"], "queue": pending.get("queue", ""),
                       "wait_s": pending.get("wait_s")}
    pending_prompt(run)
    return True


def pending_vars(run) -> dict:
    p = run.state.get("pending_cb") or {}
    return {"id": p.get("id"), "queue": str(p.get("queue") or "").replace("_", " "),
            "when": run.lang.when(p.get("wait_s"))}


def pending_prompt(run, log: bool = True) -> None:
    run.cbv = pending_vars(run)
    prompts = run.speak(run.flow.callbacks.pending) or [
        run.say(S.PENDING, queue=run.cbv["queue"], when=run.cbv["when"])]
    hints = run.lang.words(S.KEEP_WORDS)[:2] + run.lang.words(S.CANCEL_WORDS)[:2]
    run.actions.append(A.Gather(prompts=tuple(prompts), input=run.yes_no_inputs(), num_digits=1,
                                timeout=6, hints=hints, language=run.flow.language))
    run.state["wait"] = Wait.PENDING_CALLBACK
    if log:
        run.step(None, "callback_pending", prompts, action="gather", detail={"callback": run.cbv["id"]})


def on_pending(run, node: Any, event: E.Event) -> None:
    """Keep or cancel: 1 or "keep", 2 or "cancel"; silence keeps it and goes on with the call."""
    s = run.state
    run.cbv = pending_vars(run)
    text = words(event.text) if isinstance(event, E.Speech) else ""
    digits = event.digits if isinstance(event, E.Digits) else None
    if digits == "2" or (text and says(text, run.lang.words(S.CANCEL_WORDS))):
        choice = "cancel"
    elif (digits == "1" or yes_no(event, run.lang) == "yes"
          or (text and says(text, run.lang.words(S.KEEP_WORDS)))):
        choice = "keep"
    else:
        choice = None
    run.step(None, "callback_pending", digits=digits, speech=getattr(event, "text", None),
             detail={"callback": run.cbv["id"], "choice": choice})
    if choice == "keep":
        said = run.speak(run.flow.callbacks.kept) or [run.say(S.KEPT, when=run.cbv["when"])]
        run.actions += said + [A.Hangup()]
        s.update(outcome=Outcome.CALLBACK, wait=Wait.ENDED)
        return
    if choice == "cancel":
        run.actions.append(A.CancelCallback(run.cbv["id"]))
        run.actions += run.speak(run.flow.callbacks.cancelled) or [run.say(S.CANCELLED)]
        s.pop("pending_cb", None)
    run.goto(run.flow.start)


def pending_hung_up(run) -> None:
    run.state["outcome"] = Outcome.CALLBACK  # hanging up on "keep or cancel?" keeps the callback
