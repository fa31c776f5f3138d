"""`queue:` the caller holds for the next agent, keeping their place in the line, hears
their position and wait, and may be offered a callback (ivr.engine.callback_dialogue)."""

from __future__ import annotations

from datetime import datetime

from ivr.flows.nodes.queue import QueueNode
from ivr.i18n import sentences as S

from .. import actions as A
from .. import callback_dialogue, survey
from .. import events as E
from ..kind import STOP, NodeKind
from ..states import Outcome, Wait
from ..wording import whole

WAIT_SAY_EVERY = 4  # the flow's wait_say on the first hold cycle, then on every 4th


def enter(run, node: QueueNode):
    s = run.state
    # Back from the callback questions (none booked): the caller heard the entry prompt and
    # the hold news already; they are told they are still in line, not welcomed again.
    returning = bool(s.pop("cb", None)) and (s.get("line") or {}).get("queue") == node.name
    said = [] if returning else run.speak(node.say)
    run.actions += said + [A.Enqueue(node.name)]
    s["wait"] = Wait.QUEUE
    s["outcome"] = None
    if not returning:
        s.pop("hold", None)
    line = s.get("line")
    if not line or line.get("queue") != node.name:
        # The caller's place in line: kept when they come back to the same queue.
        s["line"] = {"queue": node.name, "since": run.at}
    run.step(node, "enter", said, action=f"enqueue:{node.name}")
    return STOP


def on_wait(run, node: QueueNode, event: E.QueueWait) -> None:
    """Twilio's wait cycle: what the caller hears while holding."""
    said: list = []
    if node.max_wait and event.queue_time is not None and event.queue_time >= node.max_wait:
        run.step(node, "queue_wait", detail={"position": event.position,
                                              "queue_time": event.queue_time, "leave": True})
        run.actions.append(A.LeaveQueue())
        return
    est = run.estimate(node.name, event.position)
    # Our line also holds callbacks, which Twilio's queue position does not count.
    position = est.position if est is not None else event.position
    hold = run.state.get("hold") if isinstance(run.state.get("hold"), dict) else {}
    cycle = hold.get("n", 0) + 1
    # The first cycle says where the caller is; later ones only what changed, else a thank-you.
    place = None
    if node.announce_position and position:
        nobody_free = est is not None and est.agents_available == 0
        place = [position, nobody_free]
        if cycle == 1 or place != hold.get("place"):
            if position > 1:
                said.append(run.say(S.POSITION, position=position))
            else:  # next, truly, only while someone is free to answer
                said.append(run.say(S.ALL_BUSY_FIRST if nobody_free else S.NEXT_IN_LINE))
    wait = None
    if node.announce_wait and est is not None and est.wait_s is not None:
        wait = run.lang.duration(est.wait_s)
        if cycle == 1 or wait != hold.get("wait"):
            said.append(run.say(S.WAIT_IS, wait=wait))
    if (cycle - 1) % WAIT_SAY_EVERY == 0:
        said += run.speak(node.wait_say)
    if not said and cycle > 1:
        said.append(run.say(S.THANKS_FOR_HOLDING))
    offer = callback_dialogue.offer(run, node, est, again=bool(hold.get("offered")))
    run.state["hold"] = {"n": cycle, "place": place, "wait": wait,
                         "offered": bool(hold.get("offered")) or offer is not None}
    if offer is not None:
        if said:  # a breath between where they are and what they may do about it
            offer.insert(0, A.Silence(1))
        if node.wait_play:
            offer.append(A.Play(node.wait_play))
        run.actions += said
        run.actions.append(A.OfferCallback(tuple(offer), node.callback.key,
                                           callback_dialogue.phrases(run, node.callback),
                                           run.flow.language, run.yes_no_inputs()))
        said += offer
    else:
        if node.wait_play:
            said.append(A.Play(node.wait_play))
        run.actions += said
    detail = {"position": event.position, "queue_time": event.queue_time,
              "average_time": event.average_time, "size": event.size}
    if est is not None:
        detail.update(line_position=est.position, estimated_wait=whole(est.wait_s),
                      agents_available=est.agents_available, callback_offered=offer is not None)
    run.step(node, "queue_wait", said, detail=detail)


def on_left(run, node: QueueNode, event: E.QueueLeft) -> None:
    """The caller is out of Twilio's queue: answered, gone, or leaving for a callback."""
    run.step(node, "queue_left", detail={"result": event.result, "queue_time": event.queue_time})
    if callback_dialogue.left_queue(run, node, event):
        return
    run.state["line"] = None
    if event.result == "bridged":
        run.state["outcome"] = Outcome.QUEUED
        run.state["wait"] = Wait.ENDED
        run.actions.append(A.Hangup())
    elif event.result == "hangup":
        run.state["outcome"] = Outcome.ABANDONED
        run.state["wait"] = Wait.ENDED
        run.actions.append(A.Hangup())
    else:
        run.goto(node.next)


def on_put_through(run, node: QueueNode, event: E.TransferEnded) -> None:
    """The server took this caller out of Twilio's queue into a <Dial> to an agent, and that
    Dial has ended. Answered: the agent has hung up and the caller's leg comes back here (the
    survey, or goodbye), the time held counted as the queue's wait. Not answered: back in
    the queue, keeping their place in line."""
    s = run.state
    agent = s.pop("agent", None)
    name = agent.get("name") if isinstance(agent, dict) else agent
    if survey.answered(event.status):
        since = (s.get("line") or {}).get("since")
        held = ((datetime.fromisoformat(run.at) - datetime.fromisoformat(since)).total_seconds()
                if since else 0.0)
        queue_time = max(0, round(held - (event.duration or 0)))
        run.step(node, "queue_left", detail={"result": "bridged", "queue_time": queue_time,
                                             "agent": name, "talk_time": event.duration})
        survey.after_person(run, node, Outcome.QUEUED, node.name, name)
        return
    run.step(node, "agent_missed", detail={"agent": name, "status": event.status})
    run.actions.append(A.Enqueue(node.name))


def repeat(run, node: QueueNode, wait: Wait) -> None:
    if wait is Wait.CALLBACK:
        callback_dialogue.prompt(run, node, [], log=False)
    else:
        run.actions.append(A.Enqueue(node.name))


def hang_up(run, node: QueueNode, wait: Wait) -> None:
    if wait is Wait.CALLBACK:
        callback_dialogue.hung_up(run, node)


KIND = NodeKind(enter, events={
    Wait.QUEUE: {E.QueueWait: on_wait, E.QueueLeft: on_left, E.TransferEnded: on_put_through,
                 E.Digits: callback_dialogue.on_hold_answer, E.Speech: callback_dialogue.on_hold_answer},
    Wait.CALLBACK: dict.fromkeys(callback_dialogue.EVENTS, callback_dialogue.on_answer),
}, repeat=repeat, hang_up=hang_up)
