"""The flow engine: (flow, call state, event) -> (actions, new state, step records).

    events       what happens on a call (a call starts, keys, speech, the queue, a hang-up)
    actions      what the telephony layer is told to do (say, gather, enqueue, dial...)
    runner       `run`: one event applied to one call
    context      what the engine is given from outside (the time, lookups, estimates...)
    nodes        what each node kind does on a call, one module each, and their table
    kind         the record a node kind's module fills in (`NodeKind`)
    callback_dialogue  a caller on hold takes a callback instead; pending callbacks
    wording      yes, no and the other words callers answer with, in the call's language
    states       what a call waits for, how it ended, where a callback is (str enums)
    simulation   a call driven in process, without a phone (simulator, flow tests, test calls)

Pure: no Flask, Redis, Twilio, clock or I/O inside. Everything it needs from outside comes in
through `Context`.
"""

from .runner import Context, Estimate, FlowRuntimeError, Match, Result, clock, new_state, run

__all__ = ["Context", "Estimate", "FlowRuntimeError", "Match", "Result", "clock", "new_state", "run"]
