"""The flow engine: (flow, call state, event) -> (actions, new state, step records).

    events       what happens on a call (a call starts, keys, speech, the queue, a hang-up)
    actions      what the telephony layer is told to do (say, gather, enqueue, dial...)
    runner       `run`: one event applied to one call
    states       what a call waits for, how it ended, where a callback is (str enums)
    simulation   a call driven in process, without a phone (simulator, flow tests, test calls)

Pure: no Flask, Redis, Twilio, clock or I/O inside. Everything it needs from outside comes in
through `Context`.
"""

from .runner import Context, Estimate, FlowRuntimeError, Match, Result, clock, new_state, run

__all__ = ["Context", "Estimate", "FlowRuntimeError", "Match", "Result", "clock", "new_state", "run"]
