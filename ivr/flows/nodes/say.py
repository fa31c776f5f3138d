"""`say:` speak a prompt, then go on to `next`."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Flow, Node, Prompt
from ..prompts import prompt_seconds
from .kind import PROMPT, Exit, NodeKind, RawNode


@dataclass(frozen=True)
class SayNode(Node):
    prompt: Prompt = ()


def load(b, raw: RawNode) -> SayNode:
    return SayNode(**raw.common, prompt=b.prompt(raw.key_path, raw.value))


def check(c, node: SayNode) -> None:
    if not node.next:
        c.at(node, f"the call would stop abruptly after '{node.id}': add 'next' (to end the call, "
             "use a hangup node: `hangup: \"Goodbye.\"`)", code="dead-end")
    if not node.prompt:
        c.at(node, f"'{node.id}' says nothing", "warning", "silence")


def exits(node: SayNode, wpm: int, mode: str, speech: bool) -> list[Exit]:
    return [Exit("", t, prompt_seconds(node.prompt, wpm), 0) for _, t in node.edges()]


def label(flow: Flow, node: SayNode) -> str:
    return f"~{prompt_seconds(node.prompt, flow.settings.words_per_minute):.0f} s"


KIND = NodeKind("say", SayNode, PROMPT, load, check=check, exits=exits, goes_straight_on=True,
                mermaid=("[", "]"), dot="box", label=label)
