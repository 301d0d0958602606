"""What a CI suite asks of a running server: wait for mail (the long poll), seed mail over HTTP and
from [[seed]] tables, change a listener's scenario at run time, and reset. Real servers, real
clients (smtplib, imaplib, poplib, urllib)."""

from __future__ import annotations

import imaplib
import json
import mailbox
import poplib
import smtplib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import ConfigError, parse_config
from support import USERS

HOST = "127.0.0.1"
LISTENERS = (
    {"name": "plain", "protocol": "smtp", "tls": "plaintext", "role": "mta"},
    {"name": "imap", "protocol": "imap", "tls": "plaintext"},
    {"name": "pop3", "protocol": "pop3", "tls": "plaintext"},
)


def call(server: ThreadedMailServer, path: str, method: str = "GET", body: bytes | None = None,
         content_type: str = "message/rfc822") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://{HOST}:{server.http_port}{path}", data=body, method=method,
                                     headers={"Content-Type": content_type} if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def send(server: ThreadedMailServer, message: bytes, to: str = "bob@example.test") -> None:
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as client:
        client.sendmail("app@elsewhere.example", [to], message)


@pytest.fixture
def server(api_server: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    return api_server(*LISTENERS)


# --- wait for mail ----------------------------------------------------------------------------


def test_a_waiting_request_answers_within_a_tenth_of_a_second_of_delivery(server: ThreadedMailServer) -> None:
    delivered: list[float] = []
    server.call(lambda: server.store.arrival_hooks.append(lambda *_: delivered.append(time.monotonic())))
    replied: list[float] = []

    def application() -> None:  # the code under test, sending a little later on its own thread
        with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as client:
            client.sendmail("app@elsewhere.example", ["bob@example.test"], b"Subject: Your code\r\n\r\n1234\r\n")
            replied.append(time.monotonic())  # after the 250 reply to the end of DATA

    sender = threading.Timer(0.3, application)
    asked = time.monotonic()
    sender.start()
    status, body = call(server, "/api/messages/bob?wait=10&subject=your+code")
    answered = time.monotonic()
    sender.join()
    assert status == 200 and body["count"] == 1 and body["timed_out"] is False
    assert body["messages"][0]["headers"]["subject"] == "Your code"
    assert answered - asked >= 0.3
    assert answered - delivered[0] < 0.1
    assert answered - replied[0] < 0.1


def test_a_wait_that_runs_out_says_so_with_what_matched(server: ThreadedMailServer) -> None:
    send(server, b"Subject: other\r\n\r\nx\r\n")
    started = time.monotonic()
    status, body = call(server, "/api/messages/bob?wait=0.3&subject=wanted")
    assert time.monotonic() - started >= 0.3
    assert status == 200 and body == {"user": "bob", "count": 0, "messages": [], "waited": body["waited"],
                                      "timed_out": True}
    assert body["waited"] >= 0.3


def test_filters_subject_from_to_since_mailbox_and_count(server: ThreadedMailServer) -> None:
    send(server, b"From: Shop <shop@elsewhere.example>\r\nTo: bob+orders@example.test\r\nSubject: Order 1\r\n\r\nx\r\n",
         to="bob+orders@example.test")
    middle = time.time()
    send(server, b"From: News <news@elsewhere.example>\r\nTo: bob@example.test\r\nSubject: Weekly\r\n\r\nx\r\n")

    def subjects(query: str) -> list[str]:
        status, body = call(server, f"/api/messages/bob?{query}")
        assert status == 200, body
        return [message["headers"]["subject"] for message in body["messages"]]

    assert subjects("subject=order") == ["Order 1"]
    assert subjects("from=NEWS@") == ["Weekly"]
    assert subjects("to=bob%2Borders@example.test") == ["Order 1"]
    assert subjects(f"since={middle}") == ["Weekly"]
    assert subjects("mailbox=Sent") == []
    assert subjects("mailbox=inbox") == ["Order 1", "Weekly"]
    status, body = call(server, "/api/messages/bob?wait=0.2&count=3")
    assert body["count"] == 2 and body["timed_out"] is True
    assert body["messages"][0]["raw_url"] == "/api/messages/bob/INBOX/1/raw"


def test_imap_append_wakes_a_wait_on_that_mailbox(server: ThreadedMailServer) -> None:
    def append() -> None:
        with imaplib.IMAP4(HOST, server.port("imap"), timeout=10) as client:
            client.login("bob", "bob-password")
            client.append("Sent", "", None, b"Subject: copy kept\r\n\r\nx\r\n")

    appender = threading.Timer(0.2, append)
    appender.start()
    status, body = call(server, "/api/messages/bob?wait=10&mailbox=Sent")
    appender.join()
    assert status == 200 and [m["headers"]["subject"] for m in body["messages"]] == ["copy kept"]
    assert body["waited"] < 5


@pytest.mark.parametrize(("query", "error"), [
    ("wait=soon", "wait: 'soon' is not a number of seconds"),
    ("wait=301", "wait: must be between 0 and 300 seconds"),
    ("colour=red", "unknown query parameter 'colour'"),
    ("count=0", "count: must be at least 1"),
])
def test_bad_wait_queries_are_400(server: ThreadedMailServer, query: str, error: str) -> None:
    status, body = call(server, f"/api/messages/bob?{query}")
    assert status == 400 and body["error"].startswith(error)


def test_stopping_the_server_ends_a_wait(api_server: Callable[..., ThreadedMailServer]) -> None:
    server = api_server(*LISTENERS)
    answers: list[tuple[int, Any]] = []
    waiter = threading.Thread(target=lambda: answers.append(call(server, "/api/messages/bob?wait=60")))
    waiter.start()
    # the request is in once its hook is: then stop
    deadline = time.monotonic() + 10
    while not server.call(lambda: server.store.arrival_hooks) and time.monotonic() < deadline:
        waiter.join(0.01)
    started = time.monotonic()
    server.stop()
    waiter.join(10)
    assert answers and answers[0][1]["timed_out"] is True and time.monotonic() - started < 5


# --- seed over HTTP ---------------------------------------------------------------------------


def test_seeded_mail_is_read_over_imap_and_pop3(server: ThreadedMailServer) -> None:
    status, body = call(server, "/api/messages/bob/INBOX?flags=%5CSeen,%5CFlagged,project-x"
                                "&internal_date=2024-01-02T03:04:05Z", "POST",
                        b"From: a@example.test\nSubject: seeded\n\nline one\nline two\n")
    assert status == 201, body
    assert body["uid"] == 1 and body["flags"] == ["\\Flagged", "\\Seen", "project-x"]
    assert body["internal_date"] == "2024-01-02T03:04:05.000+00:00"
    expected = b"From: a@example.test\r\nSubject: seeded\r\n\r\nline one\r\nline two\r\n"
    assert body["size"] == len(expected)

    with imaplib.IMAP4(HOST, server.port("imap"), timeout=10) as client:
        client.login("bob", "bob-password")
        client.select("INBOX")
        status_line, data = client.fetch("1", "(FLAGS INTERNALDATE RFC822)")
        assert status_line == "OK"
        meta, content = data[0]  # type: ignore[misc]
        assert b"\\Seen" in meta and b"\\Flagged" in meta and b"project-x" in meta
        assert b'INTERNALDATE " 2-Jan-2024 03:04:05 +0000"' in meta
        assert content == expected
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=10)
    try:
        pop.user("bob")
        pop.pass_("bob-password")
        assert pop.stat() == (1, len(expected))
        assert b"\r\n".join(pop.retr(1)[1]) + b"\r\n" == expected
    finally:
        pop.quit()


def test_seeding_a_new_mailbox_needs_create(server: ThreadedMailServer) -> None:
    status, body = call(server, "/api/messages/bob/Archive%2F2024", "POST", b"Subject: old\r\n\r\nx\r\n")
    assert status == 404 and "create=true" in body["error"]
    status, body = call(server, "/api/messages/bob/Archive%2F2024?create=true", "POST", b"Subject: old\r\n\r\nx\r\n")
    assert status == 201 and body["mailbox"] == "Archive/2024"
    status, listing = call(server, "/api/messages/bob/Archive%2F2024")
    assert [m["headers"]["subject"] for m in listing["messages"]] == ["old"]


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/api/messages/bob/INBOX", b"", 400, "the body must be the message"),
    ("/api/messages/bob/INBOX?flags=%5CRecent", b"Subject: x\r\n\r\n", 400, "flags: '\\\\Recent' is not a system flag"),
    ("/api/messages/bob/INBOX?flags=a(b", b"Subject: x\r\n\r\n", 400, "flags: 'a(b' is not a flag keyword"),
    ("/api/messages/bob/INBOX?internal_date=yesterday", b"Subject: x\r\n\r\n", 400, "internal_date: 'yesterday'"),
    ("/api/messages/carol/INBOX", b"Subject: x\r\n\r\n", 404, "no user 'carol'"),
])
def test_bad_seeds_are_refused(server: ThreadedMailServer, path: str, body: bytes, status: int, error: str) -> None:
    got, answer = call(server, path, "POST", body)
    assert got == status and answer["error"].startswith(error), answer


def test_a_seed_over_a_megabyte_is_taken(server: ThreadedMailServer) -> None:
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2000
    status, body = call(server, "/api/messages/bob/INBOX", "POST", big)
    assert status == 201 and body["size"] == len(big)


# --- [[seed]] tables --------------------------------------------------------------------------


def seed_config(certs_dir: Path, seeds: list[dict[str, Any]], base_dir: Path) -> Any:
    return parse_config({"certs": {"dir": str(certs_dir)}, "users": USERS, "http": {"port": 0},
                         "listeners": [{**listener, "port": 0} for listener in LISTENERS], "seed": seeds},
                        source="seed.toml", base_dir=base_dir)


def test_seed_tables_load_eml_files_directories_mbox_and_maildir(certs_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "welcome.eml").write_bytes(b"Subject: welcome\n\nhello\n")
    (tmp_path / "dir").mkdir()
    for name in ("b.eml", "a.eml"):
        (tmp_path / "dir" / name).write_bytes(f"Subject: {name}\r\n\r\nx\r\n".encode())
    (tmp_path / "dir" / "notes.txt").write_text("not mail")
    box = mailbox.mbox(tmp_path / "old.mbox")
    message = mailbox.mboxMessage(b"Subject: from mbox\n\nx\n")
    message.set_from("someone@example.test", time.gmtime(1_700_000_000))
    message.set_flags("RA")
    box.add(message)
    box.close()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    entry = mailbox.MaildirMessage(b"Subject: from maildir\n\nx\n")
    entry.set_subdir("cur")
    entry.set_flags("FS")
    maildir.add(entry)
    seeds = [{"user": "bob", "path": "welcome.eml"}, {"user": "bob", "mailbox": "Lists", "path": "dir"},
             {"user": "alice", "path": "old.mbox"}, {"user": "alice", "mailbox": "Archive/2023", "path": "Maildir"}]
    with ThreadedMailServer(seed_config(certs_dir, seeds, tmp_path)) as server:
        _, bob = call(server, "/api/messages/bob")
        assert [(m["mailbox"], m["headers"]["subject"]) for m in bob["messages"]] == [
            ("INBOX", "welcome"), ("Lists", "a.eml"), ("Lists", "b.eml")]
        _, alice = call(server, "/api/messages/alice")
        assert [(m["mailbox"], m["headers"]["subject"], m["flags"]) for m in alice["messages"]] == [
            ("INBOX", "from mbox", ["\\Answered", "\\Seen"]), ("Archive/2023", "from maildir", ["\\Flagged", "\\Seen"])]
        assert alice["messages"][0]["internal_date"] == "2023-11-14T22:13:20.000+00:00"
        assert server.call(lambda: server.store.accounts["bob"].inbox.messages[0].data) == \
            b"Subject: welcome\r\n\r\nhello\r\n"
        # a reset keeps the seeded mail and drops the rest
        send(server, b"Subject: later\r\n\r\nx\r\n")
        status, reset = call(server, "/api/reset", "POST", b"")
        assert status == 200 and reset["messages"] == 6 and reset["seeded"] == 5
        _, bob = call(server, "/api/messages/bob")
        assert [m["headers"]["subject"] for m in bob["messages"]] == ["welcome", "a.eml", "b.eml"]


@pytest.mark.parametrize(("seed", "error"), [
    ({"user": "carol", "path": "x.eml"}, "seed.toml: seed[0].user: names no configured user ('carol')"),
    ({"user": "bob", "path": "missing.eml"}, "seed.toml: seed[0].path: "),
    ({"user": "bob", "path": "x.eml", "folder": "INBOX"}, "seed.toml: seed[0].folder: unknown key"),
    ({"path": "x.eml"}, "seed.toml: seed[0].user: is required"),
])
def test_bad_seed_tables_are_one_line(certs_dir: Path, tmp_path: Path, seed: dict[str, Any], error: str) -> None:
    (tmp_path / "x.eml").write_bytes(b"Subject: x\r\n\r\n")
    with pytest.raises(ConfigError) as raised:
        seed_config(certs_dir, [seed], tmp_path)
    assert str(raised.value).startswith(error) and "\n" not in str(raised.value)


def test_an_unloadable_seed_stops_the_start_naming_file_and_key(certs_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as raised:
        ThreadedMailServer(seed_config(certs_dir, [{"user": "bob", "path": "empty"}], tmp_path)).start()
    assert str(raised.value) == (f"seed.toml: seed[0].path: {tmp_path / 'empty'}: cannot load: a directory with no "
                                 ".eml files in it and not a Maildir (cur/, new/, tmp/)")


# --- runtime scenarios and reset --------------------------------------------------------------


def put_scenario(server: ThreadedMailServer, name: str, body: dict[str, Any]) -> tuple[int, Any]:
    return call(server, f"/api/listeners/{name}/scenario", "PUT", json.dumps(body).encode(), "application/json")


def test_a_new_scenario_meets_new_connections_and_open_ones_keep_theirs(server: ThreadedMailServer) -> None:
    before = smtplib.SMTP(HOST, server.port("plain"), timeout=10)
    before.ehlo()
    status, body = put_scenario(server, "plain", {"scenario": "chaos",
                                                  "chaos": {"stage": "RCPT", "reply": "451 4.3.0 Try later"}})
    assert status == 200 and body["scenario"] == "chaos" and body["port"] == server.port("plain")
    assert body["chaos"] == {"stage": "RCPT", "reply": "451 4.3.0 Try later", "disconnect": False, "delay": 0.0}
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(server, b"Subject: x\r\n\r\nx\r\n")
    assert refused.value.recipients["bob@example.test"] == (451, b"4.3.0 Try later")
    before.sendmail("app@elsewhere.example", ["bob@example.test"], b"Subject: old rules\r\n\r\nx\r\n")
    before.quit()
    _, listing = call(server, "/api/listeners")
    assert [entry["scenario"] for entry in listing["listeners"] if entry["name"] == "plain"] == ["chaos"]
    records = server.journal.wait_for(2)
    assert sorted(record.scenario or "" for record in records) == ["", "chaos"]

    status, reset = call(server, "/api/reset", "POST", b"")
    assert status == 200 and reset["listeners"] == ["plain"] and reset["messages"] == 1 and reset["sessions"] == 2
    send(server, b"Subject: known-good again\r\n\r\nx\r\n")
    assert server.call(lambda: len(server.store.accounts["bob"].inbox.messages)) == 1
    [record] = server.journal.wait_for(1)
    assert record.scenario is None


def test_a_certificate_scenario_can_be_switched_on(server: ThreadedMailServer) -> None:
    status, body = put_scenario(server, "imap", {"scenario": "cert-expired"})
    assert status == 200 and body["scenario"] == "cert-expired"
    status, body = put_scenario(server, "imap", {"scenario": None})
    assert status == 200 and body["scenario"] is None


@pytest.mark.parametrize(("name", "body", "status", "error"), [
    ("plain", {"scenario": "no-such"}, 400, "request: listeners.plain.scenario: unknown scenario 'no-such'"),
    ("plain", {"scenario": "injected-bye"}, 400, "request: listeners.plain.scenario: 'injected-bye' is not for smtp"),
    ("plain", {"scenario": "chaos"}, 400, "request: listeners.plain.chaos.stage: chaos needs a reply"),
    ("plain", {"scenario": None, "chaos": {"delay": 1}}, 400, 'request: listeners.plain.chaos: goes with'),
    ("plain", {"scenario": "chaos", "chaos": {"delay": 1, "colour": "red"}}, 400, "request: listeners.plain.chaos.colour"),
    ("plain", {"chaos": {}}, 400, "the body is"),
    ("nowhere", {"scenario": None}, 404, "no listener 'nowhere' (listeners: plain, imap, pop3)"),
])
def test_bad_scenario_changes_are_refused(server: ThreadedMailServer, name: str, body: dict[str, Any], status: int,
                                          error: str) -> None:
    got, answer = put_scenario(server, name, body)
    assert got == status and answer["error"].startswith(error), answer


def test_state_changes_are_never_get(server: ThreadedMailServer) -> None:
    assert call(server, "/api/reset")[0] == 405
    assert call(server, "/api/listeners/plain/scenario")[0] == 405
    status, body = call(server, "/api/reset", "POST", b"")
    assert status == 200 and body == {"sessions": 0, "messages": 0, "captured": 0, "listeners": [], "seeded": 0,
                                   "tokens": 0}
