"""LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819), and subscriptions that outlive their
mailbox (RFC 3501 6.3.9): exact replies."""

from __future__ import annotations

from imap.imap_harness import SIMPLE, Client, client, make_store


def listing() -> Client:
    store = make_store()
    account = store.accounts["alice"]
    for name in ("a/b/c", "a/d", "gone", "x"):
        account.create(name)
    account.mailbox("a/d").append(SIMPLE, ["\\Seen"])  # type: ignore[union-attr]
    c = client(store)
    c.login()
    for name in (b"a/b/c", b"gone", b"x"):
        assert c.send(b"s SUBSCRIBE " + name + b"\r\n") == b"s OK SUBSCRIBE completed\r\n"
    assert c.send(b"d DELETE gone\r\n") == b"d OK DELETE completed\r\n"
    return c


def test_subscriptions_outlive_their_mailbox() -> None:
    c = listing()
    assert c.send(b'a LSUB "" gone\r\n') == b'* LSUB () "/" gone\r\na OK LSUB completed\r\n'
    assert c.send(b"b UNSUBSCRIBE gone\r\n") == b"b OK UNSUBSCRIBE completed\r\n"
    assert c.send(b"c UNSUBSCRIBE gone\r\n") == b"c NO [NONEXISTENT] Mailbox doesn't exist: gone\r\n"
    assert c.send(b"d SUBSCRIBE gone\r\n") == b"d NO [NONEXISTENT] Mailbox doesn't exist: gone\r\n"


def test_list_extended_selection_and_return_options() -> None:
    c = listing()
    assert c.send(b'a LIST (SUBSCRIBED) "" (a* g* x)\r\n') == (
        b'* LIST (\\HasNoChildren \\Subscribed) "/" a/b/c\r\n'
        b'* LIST (\\NonExistent \\Subscribed) "/" gone\r\n'
        b'* LIST (\\HasNoChildren \\Subscribed) "/" x\r\n'
        b"a OK LIST completed\r\n"
    )
    # RECURSIVEMATCH: "a" and "a/b" are above a subscription "%" does not reach.
    assert c.send(b'b LIST (SUBSCRIBED RECURSIVEMATCH) "" (a g% x)\r\n') == (
        b'* LIST (\\HasChildren) "/" a (CHILDINFO ("SUBSCRIBED"))\r\n'
        b'* LIST (\\NonExistent \\Subscribed) "/" gone\r\n'
        b'* LIST (\\HasNoChildren \\Subscribed) "/" x\r\n'
        b"b OK LIST completed\r\n"
    )
    assert c.send(b'c LIST "" a/% RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UNSEEN))\r\n') == (
        b'* LIST (\\HasChildren) "/" a/b\r\n* STATUS a/b (MESSAGES 0 UNSEEN 0)\r\n'
        b'* LIST (\\HasNoChildren) "/" a/d\r\n* STATUS a/d (MESSAGES 1 UNSEEN 0)\r\n'
        b"c OK LIST completed\r\n"
    )
    assert c.send(b'd LIST (REMOTE) "" x\r\n') == b'* LIST (\\HasNoChildren) "/" x\r\nd OK LIST completed\r\n'
    assert c.send(b'e LIST (RECURSIVEMATCH) "" %\r\n') == b"e BAD RECURSIVEMATCH needs another selection option\r\n"
    assert c.send(b'f LIST (RECURSIVEMATCH REMOTE) "" %\r\n') == b"f BAD RECURSIVEMATCH needs another selection option\r\n"
    assert c.send(b'g LIST (BOGUS) "" %\r\n') == b"g BAD Unknown LIST selection option BOGUS\r\n"
    assert c.send(b'h LIST "" % RETURN (BOGUS)\r\n') == b"h BAD Unknown LIST return option BOGUS\r\n"
    assert c.send(b'i LSUB (SUBSCRIBED) "" %\r\n') == b"i BAD Expected a string\r\n"
