"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 4) over search results.

REFERENCES links messages as Dovecot does where the RFC leaves room (a message's own parent
replaces an earlier guess; a link that would make a loop, or that contradicts a parent already
set by a References field, is ignored), so threads come out as Dovecot's. Dates are RFC 5256's
sent date (the internal date when the Date field is missing or broken); ties go to the lower
sequence number. Nothing here recurses over the tree: reference chains are mail's to choose.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count

from mailmodes.protocols.imap import message as mime
from mailmodes.protocols.imap.sort import KEYS
from mailmodes.store import Message

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
_sent_date = KEYS["DATE"]


@dataclass(eq=False)
class _Node:
    number: int = 0  # the message's sequence number; 0 for a dummy (a referenced, absent message)
    date: float = 0.0
    subject: str = ""  # decoded Subject field
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)

    def sort_key(self) -> tuple[float, int]:
        if self.number:
            return self.date, self.number
        return self.children[0].sort_key()  # a dummy dates from its first child (children sorted)


def thread(algorithm: str, matched: Sequence[tuple[int, Message]]) -> bytes:
    """The thread-list part of `* THREAD` (b"" for no messages), numbers as in `matched`."""
    roots = _ordered_subject(matched) if algorithm == "ORDEREDSUBJECT" else _references(matched)
    return b"".join(b"(" + _members(root) + b")" for root in roots)


def _ordered_subject(matched: Sequence[tuple[int, Message]]) -> list[_Node]:
    """RFC 5256: sort by base subject then sent date; each run of one subject is a thread whose
    first message is the parent of all the others; threads in the order of their first dates."""
    groups: dict[bytes, _Node] = {}
    for number, message in sorted(matched, key=lambda pair: (_sent_date(pair[1]), pair[0])):
        node = _Node(number, float(_sent_date(message)))
        subject = mime.base_subject(mime.parsed(message).subject()).encode("utf-8", "surrogateescape").upper()
        root = groups.get(subject)
        if root is None:
            groups[subject] = node
        else:
            root.children.append(node)
    return sorted(groups.values(), key=_Node.sort_key)


def _references(matched: Sequence[tuple[int, Message]]) -> list[_Node]:
    by_id: dict[str, _Node] = {}  # in the order made: the roots' order before sorting
    unique = count()

    def container(message_id: str | None) -> _Node:
        if message_id is None:
            # A message without a usable Message-ID of its own: a key no msg-id can be.
            message_id = f"\0{next(unique)}"
        return by_id.setdefault(message_id, _Node())

    for number, message in matched:
        parsed = mime.parsed(message)
        own = next(iter(parsed.message_ids("message-id")), None)
        if own is not None and own in by_id and by_id[own].number:
            own = None  # (1): only the first message keeps a duplicated Message-ID
        node = container(own)
        node.number, node.date, node.subject = number, float(_sent_date(message)), parsed.subject()
        references = parsed.message_ids("references") or parsed.message_ids("in-reply-to")[:1]
        parent_id = references[-1] if references else None
        if node.parent is not None and (parent_id is None or by_id.get(parent_id) is not node.parent):
            _unlink(node)  # the message's own parent beats one guessed from another's References
        if parent_id is not None:
            _link(container(parent_id), node)
        for parent_ref, child_ref in zip(references, references[1:], strict=False):
            _link(container(parent_ref), container(child_ref))

    roots = [node for node in by_id.values() if node.parent is None]
    roots = [root for root in (_prune(root) for root in roots) if root is not None]
    roots = _gather_subjects(roots)
    for root in roots:
        _sort_tree(root)
    return sorted(roots, key=_Node.sort_key)


def _link(parent: _Node, child: _Node) -> None:
    if child.parent is parent:
        return
    ancestor: _Node | None = parent
    while ancestor is not None:
        if ancestor is child:
            return  # the link would make a loop
        ancestor = ancestor.parent
    if child.parent is None:
        child.parent = parent
        parent.children.append(child)
    # else: keep the parent an earlier References field gave


def _unlink(node: _Node) -> None:
    assert node.parent is not None
    node.parent.children.remove(node)
    node.parent = None


def _prune(root: _Node) -> _Node | None:
    """RFC 5256 step 4: drop dummies without children; a dummy's children take its place,
    except at the root, where a dummy with several children stays (to hold them together)."""
    stack = [root]
    while stack:
        node = stack.pop()
        kept: list[_Node] = []
        for child in node.children:
            kept.extend(_real_descendants(child))
        node.children = kept
        for child in kept:
            child.parent = node
        stack.extend(kept)
    if root.number or len(root.children) > 1:
        return root
    if not root.children:
        return None
    only = root.children[0]
    only.parent = None
    return only


def _real_descendants(node: _Node) -> Iterator[_Node]:
    """`node` if it is a message, else the nearest messages below it (dummies flattened)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if current.number:
            yield current
        else:
            stack.extend(reversed(current.children))


def _gather_subjects(roots: list[_Node]) -> list[_Node]:
    """RFC 5256 step 5: roots with the same base subject are put together, under a dummy or
    (a reply or forward) under the original."""
    keys = {id(root): _thread_subject(root) for root in roots}
    table: dict[bytes, _Node] = {}
    for root in roots:
        base, reply = keys[id(root)]
        if not base:
            continue
        held = table.get(base)
        # A dummy beats a message, and an original beats a reply.
        if held is None or (held.number and (not root.number or (keys[id(held)][1] and not reply))):
            table[base] = root
    result = list(roots)
    for root in roots:
        base, reply = keys[id(root)]
        held = table.get(base) if base else None
        if held is None or held is root:
            continue
        result.remove(root)
        if not root.number and not held.number:
            held.children.extend(root.children)  # both dummies: their children become siblings
        elif not held.number or (reply and not keys[id(held)][1]):
            held.children.append(root)
        else:
            dummy = _Node(children=[held, root])
            keys[id(dummy)] = keys[id(held)]
            table[base] = dummy
            result[result.index(held)] = dummy
    return result


def _thread_subject(root: _Node) -> tuple[bytes, bool]:
    """The base subject (casemapped) of a root, a dummy's from its oldest child; and whether
    it was a reply or forward."""
    first = root if root.number else min(root.children, key=_Node.sort_key)
    base, reply = mime.base_subject_and_reply(first.subject)
    return base.encode("utf-8", "surrogateescape").upper(), reply


def _sort_tree(root: _Node) -> None:
    """RFC 5256 step 6: siblings by sent date, deepest first so a dummy can date from its first."""
    order: list[_Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    for node in reversed(order):
        node.children.sort(key=_Node.sort_key)


def _members(root: _Node) -> bytes:
    """thread-list contents (RFC 5256 5): a chain of only children as "1 2 3", then the
    branches as nested lists; a dummy contributes no number. Iterative, for long chains."""
    out: list[bytes] = []
    # Work items: a node to write, or a literal piece of output.
    stack: list[_Node | bytes] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        node: _Node = item
        separator = b""
        while True:
            if node.number:
                out.append(separator + b"%d" % node.number)
                separator = b" "
            if len(node.children) == 1:
                node = node.children[0]
                continue
            if node.children:
                out.append(separator)
                pieces: list[_Node | bytes] = []
                for child in node.children:
                    pieces += [b"(", child, b")"]
                stack.extend(reversed(pieces))
            break
    return b"".join(out)
