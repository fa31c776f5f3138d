"""Flows as diagrams for review: Mermaid (renders in GitHub and GitLab) or Graphviz DOT."""

from __future__ import annotations

import re

from .model import AskNode, Flow, Node, QueueNode, SayNode, TransferNode
from .prompts import prompt_seconds

_MERMAID_SHAPES = {
    "say": ("[", "]"), "ask": ("{{", "}}"), "branch": ("{", "}"), "lookup": ("[(", ")]"),
    "set": ("[/", "/]"), "queue": ("[[", "]]"), "transfer": ("[[", "]]"), "record": ("[(", ")]"),
    "hangup": ("((", "))"), "goto_flow": (">", "]"),
}
_DOT_SHAPES = {
    "say": "box", "ask": "hexagon", "branch": "diamond", "lookup": "cylinder", "set": "parallelogram",
    "queue": "box3d", "transfer": "box3d", "record": "cylinder", "hangup": "doublecircle",
    "goto_flow": "cds",
}


def _label(flow: Flow, node: Node) -> str:
    extra = ""
    if isinstance(node, QueueNode):
        extra = node.name
    elif isinstance(node, TransferNode):
        extra = node.to
    elif isinstance(node, (SayNode, AskNode)):
        secs = prompt_seconds(node.prompt, flow.settings.words_per_minute)
        extra = f"~{secs:.0f} s"
    text = f"{node.id}\\n{node.kind}" + (f": {extra}" if extra else "")
    return text


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
        a, b = _MERMAID_SHAPES[node.kind]
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
        lines.append(f'  "{node.id}" [shape={_DOT_SHAPES[node.kind]}, label="{_clean(_label(flow, node))}"];')
    for node in flow.nodes.values():
        for label, target in node.edges():
            attr = f' [label="{_clean(label)}"]' if label and label != "next" else ""
            lines.append(f'  "{node.id}" -> "{target}"{attr};')
    lines.append("}")
    return "\n".join(lines) + "\n"
