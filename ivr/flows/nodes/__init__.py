"""The node kinds of the flow language, one module each, and the table that lists them.

A node's kind is the key that says what it does (`say:`, `ask:`, `queue:`...). Everything
the flow language knows about a kind is in its module, as one `NodeKind` (see kind.py):

- its typed node (a dataclass) and how it is read from YAML, with file:line problems;
- its JSON Schema, which flow.schema.json is made from;
- what the loader checks once every node is built (targets, intents, hours);
- what the checker says about it in the whole graph (dead ends, silence, menus);
- where a caller goes from it, for the time-to-destination report;
- the catalogue sentences it says when the flow gives no words of its own (`speaks`), so
  `ivr flows check` can name those a flow's language lacks;
- how the diagrams draw it.

The loader, the checker and the diagrams look a node's kind up in `KINDS` instead of
testing its class, the way Home Assistant's script runner picks one method per action
type. The engine keeps its own table of what each kind does on a call (ivr.engine.nodes):
the flow language must not import the engine.

Adding a kind (say, `rating:`) is a module here and a row below, a module and a row in
ivr.engine.nodes, and `ivr flows schema > ivr/flows/flow.schema.json` to publish its schema
for editors (a test fails until it is).
"""

from __future__ import annotations

from .ask import KIND as ASK
from .branch import KIND as BRANCH
from .goto_flow import KIND as GOTO_FLOW
from .hangup import KIND as HANGUP
from .kind import EnvCheck, Exit, NodeKind, RawNode
from .lookup import KIND as LOOKUP
from .queue import KIND as QUEUE
from .record import KIND as RECORD
from .request import KIND as REQUEST
from .say import KIND as SAY
from .set import KIND as SET
from .sms import KIND as SMS
from .transfer import KIND as TRANSFER

# In the order operators read them in messages ("give it one of say, ask, ...").
KINDS: dict[str, NodeKind] = {kind.name: kind for kind in (
    SAY,
    ASK,
    BRANCH,
    LOOKUP,
    REQUEST,
    SET,
    SMS,
    QUEUE,
    TRANSFER,
    RECORD,
    HANGUP,
    GOTO_FLOW,
)}

__all__ = ["KINDS", "EnvCheck", "Exit", "NodeKind", "RawNode"]
