"""Flows as diagrams for review: Mermaid (renders in GitHub and GitLab) or Graphviz DOT.

Each node kind's shape and the text in its box come from its row in ivr.flows.nodes.KINDS.
"""

from __future__ import annotations

import re

from .model import Flow, Node
from .nodes import KINDS


def _label(flow: Flow, node: Node) -> str:
    label = KINDS[node.kind].label
    extra = label(flow, node) if label is not None else ""
    return f"{node.id}\\n{node.kind}" + (f": {extra}" if extra else "")


def _clean(text: str) -> str:
    # One line (a folded `if: >` condition has newlines), and no quote to end the label early.
    return re.sub(r"\s*[\r\n]+\s*", " ", text.replace('"', "'")).strip()


# Words Mermaid reads as keywords: a node with such an id breaks the chart, so it gets a prefix.
_MERMAID_WORDS = {"end", "start", "graph", "flowchart", "subgraph", "style", "class", "classdef",
                  "click", "linkstyle", "call", "default"}


def _mid(node_id: str) -> str:
    return f"n_{node_id}" if node_id.lower() in _MERMAID_WORDS else node_id


def mermaid(flow: Flow) -> str:
    lines = ["flowchart TD", f"  %% flow {flow.id} ({flow.file})"]
    for node in flow.nodes.values():
        a, b = KINDS[node.kind].mermaid
        label = _clean(_label(flow, node)).replace("\\n", "<br/>")
        lines.append(f'  {_mid(node.id)}{a}"{label}"{b}')
    for node in flow.nodes.values():
        for label, target in node.edges():
            text = _clean(label)
            arrow = f' -->|"{text}"| ' if text and text != "next" else " --> "
            lines.append(f"  {_mid(node.id)}{arrow}{_mid(target)}")
    lines.append(f"  __start((start)) --> {_mid(flow.start)}")
    return "\n".join(lines) + "\n"


def dot(flow: Flow) -> str:
    lines = [f'digraph "{flow.id}" {{', "  rankdir=TB;", '  node [fontname="Helvetica"];',
             '  __start [shape=point];', f'  __start -> "{flow.start}";']
    for node in flow.nodes.values():
        lines.append(f'  "{node.id}" [shape={KINDS[node.kind].dot}, label="{_clean(_label(flow, node))}"];')
    for node in flow.nodes.values():
        for label, target in node.edges():
            attr = f' [label="{_clean(label)}"]' if label and label != "next" else ""
            lines.append(f'  "{node.id}" -> "{target}"{attr};')
    lines.append("}")
    return "\n".join(lines) + "\n"
