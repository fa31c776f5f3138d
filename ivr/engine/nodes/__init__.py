"""What each kind of node does on a call, one module each, and the table that lists them.

A kind's module here gives the engine's side of it as one `NodeKind` (ivr/engine/kind.py):

- `enter`: what entering a node does (speak, set, dial...) and where the call goes next;
- `events`: the waits it leaves the call in, and the listener for each event there
  ({Wait.DIAL: {TransferEnded: on_ended}});
- `repeat`: what to say again when an event arrives out of place;
- `hang_up`: what a hang-up while it waits changes (a callback's reason books it).

The runner looks a node's kind up in `KINDS` and never tests its class, as Home Assistant's
script runner picks one method per action type. The flow language has its own table for
the same kinds (ivr.flows.nodes: YAML, checks, drawings); a kind needs a row in both.
"""

from __future__ import annotations

from ..kind import NodeKind
from .ask import KIND as ASK
from .branch import KIND as BRANCH
from .goto_flow import KIND as GOTO_FLOW
from .hangup import KIND as HANGUP
from .lookup import KIND as LOOKUP
from .queue import KIND as QUEUE
from .record import KIND as RECORD
from .request import KIND as REQUEST
from .say import KIND as SAY
from .set import KIND as SET
from .sms import KIND as SMS
from .transfer import KIND as TRANSFER

KINDS: dict[str, NodeKind] = {
    "say": SAY,
    "ask": ASK,
    "branch": BRANCH,
    "lookup": LOOKUP,
    "request": REQUEST,
    "set": SET,
    "sms": SMS,
    "queue": QUEUE,
    "transfer": TRANSFER,
    "record": RECORD,
    "hangup": HANGUP,
    "goto_flow": GOTO_FLOW,
}
