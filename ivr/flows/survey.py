"""The post-call survey a flow declares: which calls, and what they are asked.

    survey:
      share: 20%                # of the calls that qualify (default: all), chosen by call id
      queues: [billing, technical]   # only callers answered from these queues (default: all,
                                     # transfers included)
      score: true               # the 1-5 question (keys or speech); true: the catalogue's words
      solved: true              # then "did we solve your problem today?" yes/no
      comment: {max_length: 30} # then a short spoken comment, recorded and transcribed
      thanks: "Thanks, and goodbye."

A question is `true` (the message catalogue's words, in the flow's language), or the flow's
own prompt. The engine asks it (ivr/engine/survey.py) once the agent hangs up and the caller
is still on the line.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ivr.errors import Problem, suggest
from ivr.i18n import sentences as S

from .model import Flow, FlowSurvey

DEFAULT_COMMENT_S = 30


def load(b: Any, value: dict | None) -> FlowSurvey | None:
    """The `survey:` mapping (its shape already checked by the schema); b is the loader's Builder."""
    if value is None:
        return None
    path = ("survey",)
    comment = value.get("comment", False)
    mapping = isinstance(comment, dict)
    comment_say = comment.get("say") if mapping else comment
    comment_max = comment.get("max_length", DEFAULT_COMMENT_S) if mapping else DEFAULT_COMMENT_S
    comment_path = path + ("comment",) + (("say",) if mapping else ())
    queues = value.get("queues")
    return FlowSurvey(
        share=share(value.get("share", 1.0)),
        queues=tuple(queues) if queues else None,
        score=b.prompt(path + ("score",), value.get("score")),
        solved=value.get("solved", False) is not False,
        solved_say=b.prompt(path + ("solved",), value.get("solved")),
        comment=comment is not False,
        comment_say=b.prompt(comment_path, comment_say),
        comment_max_s=int(comment_max),
        thanks=b.prompt(path + ("thanks",), value.get("thanks")),
    )


def share(value: float | int | str) -> float:
    """0.2, 1 or "20%" as a fraction (the schema has checked the form)."""
    if isinstance(value, str):
        return float(value.strip().rstrip("%").strip()) / 100
    return float(value)


def check(flow: Flow, queue_names: set[str], reaches_a_person: bool) -> list[Problem]:
    """Warnings about a survey nobody would hear: queues the flow never puts callers in, or a
    flow where no caller reaches a person. (Errors in its shape come from the schema.)"""
    survey = flow.survey
    if survey is None or flow.source is None:
        return []
    problems: list[Problem] = []
    if not reaches_a_person:
        problems.append(flow.source.problem(
            ("survey",), "no caller of this flow reaches a person (a queue or a transfer), so nobody "
            "would hear this survey", key=True, severity="warning", code="survey-unreachable"))
    elif survey.queues and queue_names:
        for i, name in enumerate(survey.queues):
            if name not in queue_names:
                problems.append(flow.source.problem(
                    ("survey", "queues", i), f"no queue node of this flow puts callers in queue "
                    f"'{name}'{suggest(name, queue_names)}, so none of its callers would be surveyed",
                    severity="warning", code="survey-queue"))
    if survey.share == 0:
        problems.append(flow.source.problem(("survey", "share"), "share 0 surveys nobody",
                                            severity="warning", code="survey-share"))
    return problems


def speaks(flow: Flow) -> list[tuple[Any, tuple]]:
    """The catalogue sentences the survey says where the flow gives no words of its own, each
    with the path where it could, for `ivr flows check`'s untranslated warning."""
    survey = flow.survey
    if survey is None:
        return []
    said: list[tuple[Any, tuple]] = []
    if not survey.score:
        said.append((S.SURVEY_SCORE, ("survey", "score")))
    said += [(m, ("survey", "score")) for m in (S.SURVEY_SCORE_AGAIN, S.SCORE_1_WORDS, S.SCORE_2_WORDS,
                                                 S.SCORE_3_WORDS, S.SCORE_4_WORDS, S.SCORE_5_WORDS,
                                                 S.SCORE_OUT_OF)]
    if survey.solved:
        if not survey.solved_say:
            said.append((S.SURVEY_SOLVED, ("survey", "solved")))
        said += [(S.YES_WORDS, ("survey", "solved")), (S.NO_WORDS, ("survey", "solved"))]
    if survey.comment and not survey.comment_say:
        said.append((S.SURVEY_COMMENT, ("survey", "comment")))
    if not survey.thanks:
        said.append((S.SURVEY_THANKS, ("survey", "thanks")))
    return said


def sampled(call_sid: str, share: float) -> bool:
    """Whether a call falls within the survey's share: the same answer for the same call id in
    every process (a hash, not a random draw), so a retried webhook decides as the first did."""
    if share >= 1:
        return True
    if share <= 0:
        return False
    draw = int.from_bytes(hashlib.sha1(call_sid.encode()).digest()[:4], "big") / 2**32
    return draw < share
