"""A server with [store] path: what clients were told is stored is there after a restart."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailmodes.app import ThreadedMailServer

LISTENERS = ({"name": "smtp", "protocol": "smtp", "tls": "plaintext", "role": "mta"},
             {"name": "imap", "protocol": "imap", "tls": "plaintext"},
             {"name": "pop3", "protocol": "pop3", "tls": "plaintext"})


def send(server: ThreadedMailServer, subject: str, to: str = "alice@example.test") -> None:
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=10) as smtp:
        smtp.sendmail("sender@example.org", [to], f"Subject: {subject}\r\n\r\nbody\r\n")


def imap(server: ThreadedMailServer, user: str = "alice") -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10)
    client.login(user, f"{user}-password")
    return client


def test_mail_flags_and_uids_survive_a_restart(serve: Callable[..., ThreadedMailServer], tmp_path: Path) -> None:
    store: dict[str, Any] = {"path": str(tmp_path / "mail")}
    first = serve(*LISTENERS, store=store)
    for subject in ("one", "two", "three"):
        send(first, subject)
    client = imap(first)
    client.select("INBOX")
    uidvalidity = client.response("UIDVALIDITY")[1][0]
    client.uid("STORE", "2", "+FLAGS", r"(\Flagged $Important)")
    client.uid("STORE", "3", "+FLAGS", r"(\Deleted)")
    client.expunge()
    client.create("Archive/2024")
    client.append("Archive/2024", r"(\Seen)", None, b"Subject: appended\r\n\r\nx\r\n")
    client.logout()
    first.stop()

    second = serve(*LISTENERS, store=store)
    client = imap(second)
    client.select("INBOX")
    assert client.response("UIDVALIDITY")[1][0] == uidvalidity
    typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
    assert typ == "OK"
    fetched = b" ".join(item for item in data if isinstance(item, bytes))
    assert b"UID 1 FLAGS ()" in fetched and b"UID 2 FLAGS (" in fetched and b"UID 3" not in fetched, fetched
    assert b"\\Flagged" in fetched and b"$Important" in fetched, fetched
    assert client.status("Archive/2024", "(MESSAGES UIDNEXT)")[1] == [b'Archive/2024 (MESSAGES 1 UIDNEXT 2)']
    client.logout()
    send(second, "four")
    client = imap(second)
    client.select("INBOX")
    assert client.uid("SEARCH", "ALL")[1] == [b"1 2 4"]  # UID 3 is never given again
    client.logout()


def test_pop3_deletions_at_quit_are_kept(serve: Callable[..., ThreadedMailServer], tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "mail")}
    first = serve(*LISTENERS, store=store)
    send(first, "keep")
    send(first, "delete me")
    pop = poplib.POP3("127.0.0.1", first.port("pop3"), timeout=10)
    pop.user("alice")
    pop.pass_("alice-password")
    pop.dele(2)
    pop.quit()
    first.stop()
    second = serve(*LISTENERS, store=store)
    assert second.call(lambda: [m.data for m in second.store.accounts["alice"].inbox.messages]) == [
        b"Subject: keep\r\n\r\nbody\r\n"]


def test_seed_mail_goes_in_once(serve: Callable[..., ThreadedMailServer], tmp_path: Path) -> None:
    (tmp_path / "welcome.eml").write_bytes(b"Subject: welcome\n\nhi\n")
    top: dict[str, Any] = {"store": {"path": str(tmp_path / "mail")},
                           "seed": [{"user": "bob", "path": str(tmp_path / "welcome.eml")}]}
    serve(*LISTENERS, **top).stop()
    again = serve(*LISTENERS, **top)
    assert again.call(lambda: len(again.store.accounts["bob"].inbox.messages)) == 1


def test_the_session_list_survives_a_restart(serve: Callable[..., ThreadedMailServer], tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "mail")}
    first = serve(*LISTENERS, store=store)
    send(first, "recorded")
    client = imap(first)
    client.logout()
    before = [record.to_json() for record in first.journal.wait_for(2)]
    first.stop()
    with (tmp_path / "mail" / "sessions.jsonl").open("a") as file:
        file.write('{"id": 99, "listener": "cut off by a ki')  # what kill -9 can leave
    second = serve(*LISTENERS, store=store)
    assert [record.to_json() for record in second.journal.sessions()] == before
    send(second, "after")
    assert [record.id for record in second.journal.wait_for(3)] == [1, 2, 3]
    second.journal.clear()
    second.stop()
    assert serve(*LISTENERS, store=store).journal.sessions() == []


def test_an_accept_any_account_keeps_its_mail_across_a_restart(serve: Callable[..., ThreadedMailServer],
                                                               tmp_path: Path) -> None:
    """[auth] accept_any makes an account at its first login: with [store] path its mailboxes are
    on disk like any other's, so an APPEND it was told is done is there when it logs in again."""
    store = {"path": str(tmp_path / "mail")}
    first = serve(*LISTENERS, store=store, auth={"accept_any": True})
    client = imap(first, "zed")
    assert client.append("INBOX", "", None, b"Subject: kept\r\n\r\nbody\r\n")[0] == "OK"
    client.logout()
    first.stop()
    second = serve(*LISTENERS, store=store, auth={"accept_any": True})
    client = imap(second, "zed")
    client.select("INBOX")
    assert client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1].strip() == b"Subject: kept"
    client.logout()
