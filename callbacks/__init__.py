"""Callbacks instead of hold queues.

    agents.py         the agents file (who takes which queues, how to reach them) and live status
    line.py           the ordered line of each queue: live callers and callbacks, first-join order
    estimate.py       a queue's estimated wait, from the line, the agents and the call log
    store.py          callback records in Redis, changed only by Lua scripts, with history
    window.py         the calling window, in the caller's time zone
    twilio_client.py  outbound calls through Twilio's REST API, with machine detection
    dispatch.py       the rq jobs: dispatch, the dial watchdog, the safety sweep
    web.py            what the webhooks do for callbacks (ivr/web/voice.py calls it)
    api.py            the agents' and supervisors' HTTP API (bearer token)
    cli.py            `ivr agents ...` and `ivr callbacks ...`
    runtime.py        the pieces one process needs, built once

See docs/callbacks.md.
"""
