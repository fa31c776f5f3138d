"""The JSON Schema of flow files, put together from its two parts.

flow.base.json describes the file around the nodes (id, numbers, settings, hours, intents)
and what every kind shares (node ids, prompts); each node kind brings the schema of its own
node (ivr/flows/nodes). flow.schema.json is the result, published for editors
(`# yaml-language-server: $schema=...`); `ivr flows schema` prints it, and a test fails
while the published file differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources

from .nodes import KINDS, NodeKind


def schema() -> dict:
    """The whole schema, for the node kinds in the table now."""
    return json.loads(_schema_text(tuple(KINDS.items())))


@lru_cache(maxsize=4)
def _schema_text(kinds: tuple[tuple[str, NodeKind], ...]) -> str:
    return json.dumps(compose(dict(kinds)))


def compose(kinds: Mapping[str, NodeKind]) -> dict:
    base = json.loads(resources.files("ivr.flows").joinpath("flow.base.json").read_text("utf-8"))
    defs = base["$defs"]
    names = ", ".join(kinds)
    defs["node"] = {
        "type": "object",
        "description": f"A step of the call. Exactly one of: {names}.",
        "allOf": [{"if": {"required": [name]}, "then": {"$ref": f"#/$defs/node_{name}"}}
                  for name in kinds],
    }
    for name, kind in kinds.items():
        defs[f"node_{name}"] = kind.node_schema()
    for kind in kinds.values():
        for key, value in kind.defs.items():
            if defs.setdefault(key, value) is not value:
                raise ValueError(f"node kind '{kind.name}' defines $defs/{key}, which is taken")
    return base
