"""The post-call survey: the caller's verdict, asked once the agent hangs up.

When the agent hangs up an answered `<Dial>`, Twilio asks the Dial's action URL and the
caller's leg goes on with what it returns: a transfer's (`transfer:`) and the one the
server puts a queue's caller through with (`queue:`, an event `TransferEnded` at the queue
node). There, if the flow declares a `survey:` and the call qualifies (its queue, its share),
the caller is asked:

1. a score from 1 to 5, by a key or in words ("four", "cinq", "très bien");
2. optionally, "did we solve your problem today?" (yes or no);
3. optionally, a short spoken comment, recorded (a recordings job transcribes it).

Each answer is a step (`survey_score`, `survey_solved`, `survey_comment`) and the survey's
end one more (`survey_end`, with every answer and whether the caller hung up), which the
step log turns into the call's survey row. A caller who hangs up is no answer, never a bad
score: what they answered before hanging up is kept, and the rest stays empty.
"""

from __future__ import annotations

from typing import Any

from ivr.flows import survey as flow_survey
from ivr.flows.model import FlowSurvey, Node
from ivr.i18n import sentences as S

from . import actions as A
from . import events as E
from .states import Outcome, Wait
from .wording import words, yes_no, yes_no_hints

TRIES = 2  # a question not answered (silence, or words that are not a score) is asked twice
SCORES = {1: S.SCORE_1_WORDS, 2: S.SCORE_2_WORDS, 3: S.SCORE_3_WORDS, 4: S.SCORE_4_WORDS,
          5: S.SCORE_5_WORDS}
ANSWERED = ("completed", "answered")  # Twilio's DialCallStatus when a person took the call


def after_person(run, node: Node, outcome: Outcome, queue: str | None = None,
                 agent: str | None = None) -> None:
    """A person took the call and has hung up, the caller still on the line: the survey if
    the call qualifies for it, else goodbye. `queue` is the queue the caller was answered
    from (a callback call: its callback's queue), `agent` who took it when known."""
    s = run.state
    s["outcome"] = outcome
    s["line"] = None
    queue = queue or (s.get("callback") or {}).get("queue")
    survey = run.flow.survey
    if survey is None or not qualifies(survey, queue, s.get("sid") or "", run.ctx.survey_sampled):
        s["wait"] = Wait.ENDED
        run.actions.append(A.Hangup())
        return
    agent = agent or (s.get("callback") or {}).get("agent") or None
    s["survey"] = {"phase": "score", "tries": 0, "queue": queue, "agent": agent, "flow": run.flow.id}
    s["wait"] = Wait.SURVEY
    said = _question(run, survey, "score")
    run.actions.append(_gather(run, said, "score"))
    run.step(node, "survey_start", said, action="gather",
             detail={"queue": queue, "agent": agent, "outcome": str(outcome)})


def qualifies(survey: FlowSurvey, queue: str | None, call_sid: str,
              sampled: Any = None) -> bool:
    """Whether this call is surveyed: its queue is one the survey names (or it names none),
    and it falls within the share (`sampled(call_sid, share)`, by call id by default)."""
    if survey.queues is not None and queue not in survey.queues:
        return False
    return (sampled or flow_survey.sampled)(call_sid, survey.share)


def score_of(text: str, lang) -> int | None:
    """The 1-5 score in a caller's words ("4", "four out of five", "très bien"), or None when
    they name no score or two different ones ("un bon service": "un" and "bon")."""
    said = f" {words(text)} "
    for phrase in sorted(lang.words(S.SCORE_OUT_OF), key=len, reverse=True):
        w = words(phrase)
        if w and f" {w} " in said:
            said = said.replace(f" {w} ", " ", 1)  # "4 out of 5": the first number is the score
    phrases = sorted(((words(p), score) for score, m in SCORES.items() for p in lang.words(m)),
                     key=lambda ps: len(ps[0].split()), reverse=True)
    phrases += [(str(n), n) for n in SCORES]
    found: set[int] = set()
    for phrase, score in phrases:
        if phrase and f" {phrase} " in said:
            found.add(score)
            said = said.replace(f" {phrase} ", "  ")  # "not good" is not also "good"
    return found.pop() if len(found) == 1 else None


def on_event(run, node: Node, event: E.Event) -> None:
    """An answer (keys, words, silence, a recording) to the survey's current question."""
    s = run.state
    sv = s["survey"]
    survey = run.flow.survey or FlowSurvey()
    phase = sv["phase"]
    digits = event.digits if isinstance(event, E.Digits) else None
    speech = event.text if isinstance(event, E.Speech) else None
    confidence = event.confidence if isinstance(event, E.Speech) else None
    if phase == "comment":
        if isinstance(event, E.RecordingDone):
            sv["comment"] = bool(event.url)
            run.step(node, "survey_comment", action="recorded",
                     detail={"url": event.url, "duration": event.duration})
        else:
            run.step(node, "survey_comment", detail={"skipped": True})
        finish(run, node, survey)
        return
    if phase == "score":
        value: Any = _digit_score(digits) if digits is not None else (
            score_of(speech, run.lang) if speech else None)
    else:
        answer = yes_no(event, run.lang) if isinstance(event, (E.Digits, E.Speech)) else None
        value = None if answer is None else answer == "yes"
    event_name = f"survey_{phase}"
    if value is None:
        sv["tries"] = sv.get("tries", 0) + 1
        if sv["tries"] >= TRIES:
            run.step(node, event_name, digits=digits, speech=speech, confidence=confidence,
                     detail={"answer": None, "no_input": isinstance(event, E.NoInput)})
            _next(run, node, survey, phase)
            return
        again = [run.say(S.SURVEY_SCORE_AGAIN)] if phase == "score" else _question(run, survey, phase)
        run.actions.append(_gather(run, again, phase))
        run.step(node, event_name, again, digits=digits, speech=speech, confidence=confidence,
                 action="gather", detail={"answer": None, "no_input": isinstance(event, E.NoInput),
                                          "again": True})
        return
    sv[phase] = value
    run.step(node, event_name, digits=digits, speech=speech, confidence=confidence,
             detail={"answer": value})
    _next(run, node, survey, phase)


def _next(run, node: Node, survey: FlowSurvey, phase: str) -> None:
    """On to the survey's next question after `phase`, or its end."""
    sv = run.state["survey"]
    order = ["score"] + (["solved"] if survey.solved else []) + (["comment"] if survey.comment else [])
    later = order[order.index(phase) + 1:] if phase in order else []
    if not later:
        finish(run, node, survey)
        return
    sv["phase"], sv["tries"] = later[0], 0
    said = _question(run, survey, later[0])
    if later[0] == "comment":
        run.actions += said + [A.Record(survey.comment_max_s, "#", True, 3)]
        run.step(node, "survey_question", said, action="record", detail={"question": "comment"})
    else:
        run.actions.append(_gather(run, said, later[0]))
        run.step(node, "survey_question", said, action="gather", detail={"question": later[0]})


def finish(run, node: Node, survey: FlowSurvey) -> None:
    """Thank the caller and hang up; the survey's answers go to the log in one step."""
    s = run.state
    said = run.speak(survey.thanks) or [run.say(S.SURVEY_THANKS)]
    run.actions += said + [A.Hangup()]
    s["wait"] = Wait.ENDED
    run.step(node, "survey_end", said, action="hangup", detail=_answers(s["survey"], hung_up=False))


def hung_up(run) -> None:
    """The caller hung up during the survey: what they answered is kept, the rest is no answer."""
    sv = run.state.get("survey") or {}
    run.step(run.node(), "survey_end", detail=_answers(sv, hung_up=True))


def repeat(run) -> None:
    """Ask the current question again (after an event out of place)."""
    sv = run.state["survey"]
    survey = run.flow.survey or FlowSurvey()
    said = _question(run, survey, sv["phase"])
    if sv["phase"] == "comment":
        run.actions += said + [A.Record(survey.comment_max_s, "#", True, 3)]
    else:
        run.actions.append(_gather(run, said, sv["phase"]))


def _answers(sv: dict, hung_up: bool) -> dict:
    return {"score": sv.get("score"), "solved": sv.get("solved"), "comment": bool(sv.get("comment")),
            "queue": sv.get("queue"), "agent": sv.get("agent"), "hung_up": hung_up,
            "phase": sv.get("phase")}


def _digit_score(digits: str) -> int | None:
    return int(digits) if len(digits) == 1 and digits in "12345" else None


def _question(run, survey: FlowSurvey, phase: str) -> list:
    if phase == "score":
        return run.speak(survey.score) or [run.say(S.SURVEY_SCORE)]
    if phase == "solved":
        return run.speak(survey.solved_say) or [run.say(S.SURVEY_SOLVED)]
    return run.speak(survey.comment_say) or [run.say(S.SURVEY_COMMENT)]


def _gather(run, said: list, phase: str) -> A.Gather:
    if phase == "score":
        hints = tuple(str(n) for n in SCORES) + tuple(w for m in SCORES.values()
                                                      for w in run.lang.words(m)[:3])
    else:
        hints = yes_no_hints(run.lang)
    return A.Gather(tuple(said), run.yes_no_inputs(), num_digits=1, timeout=5, hints=hints,
                    language=run.flow.language)


def answered(status: str) -> bool:
    """Whether a Dial's status says a person took the call."""
    return status in ANSWERED


