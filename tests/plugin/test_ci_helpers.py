"""The plugin's CI helpers, used the way a client project uses them (pytester): wait for mail and
get it parsed, assert none came, seed, scenarios undone after the test, one server per session
reset between tests, "noproc" against a server already running, unique addresses under xdist."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer

pytest_plugins = ["pytester"]

# The application under test: it sends a mail a little later, on its own thread.
APP = '''
import smtplib
import threading
from email.message import EmailMessage


def send_later(server, to, subject, delay=0.3, *, html=True):
    message = EmailMessage()
    message["From"] = "Shop <shop@elsewhere.example>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Confirm: https://shop.example/confirm?t=42.\\n")
    if html:
        message.add_alternative('<p><a href="https://shop.example/c/42">Confirm</a></p>', subtype="html")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="invoice.pdf")
    sent = {}

    def run():
        with smtplib.SMTP(server.host, server.port("smtp-plaintext"), timeout=10) as client:
            client.login("alice", "alice-password")
            client.send_message(message)
        import time
        sent["at"] = time.monotonic()

    thread = threading.Timer(delay, run)
    thread.start()
    return thread, sent
'''


def test_wait_for_message_returns_it_parsed_as_soon_as_it_is_delivered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(app=APP, test_wait='''
import time

import pytest

from app import send_later
from mailmodes.web.remote import WaitTimeout


def test_wait(mailmodes_server):
    delivered = []
    mailmodes_server.call(lambda: mailmodes_server.store.arrival_hooks.append(
        lambda *_: delivered.append(time.monotonic())))
    address = mailmodes_server.address("bob")
    assert address.startswith("bob+t") and address.endswith("@example.test")
    thread, _ = send_later(mailmodes_server, address, "Your order")
    message = mailmodes_server.wait_for_message(to=address, subject="your order", timeout=10)
    returned = time.monotonic()
    thread.join()
    assert returned - delivered[0] < 0.1
    assert message.user == "bob" and message.mailbox == "INBOX" and message.uid == 1
    assert message.subject == "Your order" and message.sender == "Shop <shop@elsewhere.example>"
    assert message.to == [address]
    assert message.text == "Confirm: https://shop.example/confirm?t=42.\\n"
    assert message.html == '<p><a href="https://shop.example/c/42">Confirm</a></p>\\n'
    [attachment] = message.attachments
    assert (attachment.filename, attachment.content_type, attachment.data) == (
        "invoice.pdf", "application/pdf", b"%PDF-1.4")
    assert message.links == ["https://shop.example/c/42", "https://shop.example/confirm?t=42"]
    assert ("Subject", "Your order") in message.headers


def test_timeout_lists_what_arrived(mailmodes_server):
    thread, _ = send_later(mailmodes_server, "bob@example.test", "Weekly news", delay=0)
    thread.join()
    with pytest.raises(WaitTimeout) as raised:
        mailmodes_server.wait_for_message("bob", subject="Your order", timeout=0.2)
    assert str(raised.value).startswith(
        "waited 0.2 s for 1 message to bob matching subject='Your order'; 0 matched. bob has 1:")
    assert "INBOX/1 From: Shop <shop@elsewhere.example> To: bob@example.test Subject: Weekly news" in str(raised.value)


def test_assert_no_message(mailmodes_server):
    mailmodes_server.assert_no_message("bob", within=0.1)
    thread, _ = send_later(mailmodes_server, "bob@example.test", "Surprise", delay=0.05)
    with pytest.raises(AssertionError) as raised:
        mailmodes_server.assert_no_message("bob", subject="surprise", within=5)
    thread.join()
    assert "expected no message to bob matching subject='surprise', got 1:" in str(raised.value)


def test_several_and_async(mailmodes_server):
    import asyncio

    first, _ = send_later(mailmodes_server, "bob@example.test", "one", delay=0)
    second, _ = send_later(mailmodes_server, "bob@example.test", "two", delay=0.2)

    async def main():
        return await mailmodes_server.wait_for_messages_async("bob", count=2, timeout=10)

    messages = asyncio.run(main())
    first.join(); second.join()
    assert sorted(message.subject for message in messages) == ["one", "two"]
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_seed_is_read_back_over_imap_and_pop3(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_seed='''
import imaplib
import poplib
from datetime import datetime, timezone


def test_seed(mailmodes_server):
    stored = mailmodes_server.seed("alice", "Subject: from the fixture\\n\\nhello\\n", "Archive", create=True,
                                   flags=["\\\\Seen"], internal_date=datetime(2024, 5, 6, tzinfo=timezone.utc))
    assert stored["uid"] == 1 and stored["flags"] == ["\\\\Seen"]
    mailmodes_server.seed("alice", b"Subject: inbox\\r\\n\\r\\nx\\r\\n")
    with imaplib.IMAP4("127.0.0.1", mailmodes_server.port("imap-plaintext"), timeout=10) as client:
        client.login("alice", "alice-password")
        assert client.select("Archive") == ("OK", [b"1"])
        _, data = client.fetch("1", "(FLAGS INTERNALDATE BODY[HEADER.FIELDS (SUBJECT)])")
        assert b"\\\\Seen" in data[0][0] and b" 6-May-2024 00:00:00 +0000" in data[0][0]
        assert data[0][1] == b"Subject: from the fixture\\r\\n\\r\\n"
    pop = poplib.POP3("127.0.0.1", mailmodes_server.port("pop3-plaintext"), timeout=10)
    pop.user("alice"); pop.pass_("alice-password")
    assert pop.retr(1)[1] == [b"Subject: inbox", b"", b"x"]
    pop.quit()
    [message] = mailmodes_server.find_messages("alice", mailbox="Archive")
    assert message.text == "hello\\n" and message.flags == ("\\\\Seen",)
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


SESSION_TESTS = '''
import smtplib

import pytest

SEEN = {}


def send(server, to, subject):
    with smtplib.SMTP(server.host, server.port("smtp-plaintext"), timeout=10) as client:
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", [to], f"Subject: {subject}\\r\\nTo: {to}\\r\\n\\r\\nx\\r\\n".encode())


def test_first_changes_things(mailmodes):
    SEEN["first"] = mailmodes.http_url
    send(mailmodes, "bob@example.test", "first")
    mailmodes.wait_for_message("bob", subject="first")
    view = mailmodes.set_scenario("smtp-plaintext", "chaos", {"stage": "RCPT", "reply": "451 4.3.0 later"})
    assert view["scenario"] == "chaos"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(mailmodes, "bob@example.test", "refused")


def test_second_starts_clean_on_the_same_server(mailmodes):
    assert mailmodes.http_url == SEEN["first"]
    assert [l["scenario"] for l in mailmodes.listeners() if l["name"] == "smtp-plaintext"] == [None]
    mailmodes.assert_no_message("bob", within=0)
    address = mailmodes.address("bob")
    send(mailmodes, address, "second")
    assert mailmodes.wait_for_message(to=address).subject == "second"
'''


def test_one_server_per_session_reset_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_session=SESSION_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_noproc_drives_a_running_server_and_restores_its_scenarios(
        pytester: pytest.Pytester, serve: Callable[..., ThreadedMailServer]) -> None:
    from mailmodes.pytest_plugin import default_listeners

    running = serve(*default_listeners(), http={"port": 0})
    url = f"http://127.0.0.1:{running.http_port}"
    pytester.makepyfile(test_remote=SESSION_TESTS.replace(
        "    mailmodes.assert_no_message(\"bob\", within=0)\n", "") + '''

def test_ports_and_ca_come_from_the_api(mailmodes):
    import ssl
    from mailmodes.pytest_plugin import MailmodesRemote
    assert isinstance(mailmodes, MailmodesRemote)
    with smtplib.SMTP_SSL(mailmodes.host, mailmodes.port("smtp-implicit"), context=mailmodes.ssl_context,
                          timeout=10) as client:
        assert client.noop()[0] == 250
''')
    pytester.makeini(f"[pytest]\nmailmodes_url = {url}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    # the server was driven, never reset (noproc: other jobs may share it), and its scenario restored
    assert running.call(lambda: len(running.store.accounts["bob"].inbox.messages)) == 2
    assert {listener.scenario for listener in running.config.listeners} == {None}


def test_noproc_names_a_server_that_is_not_there(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(mailmodes):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mailmodes-url", "http://127.0.0.1:9")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*--mailmodes-url: http://127.0.0.1:9/api/ready: cannot reach the API*"])


def test_xdist_workers_share_a_noproc_server_without_colliding(
        pytester: pytest.Pytester, serve: Callable[..., ThreadedMailServer]) -> None:
    from mailmodes.pytest_plugin import default_listeners

    running = serve(*default_listeners(protocols=["smtp"], modes=["plaintext"]), http={"port": 0})
    seen = pytester.mkdir("seen")
    pytester.makepyfile(test_parallel=f'''
import json
import os
import smtplib

import pytest


@pytest.mark.parametrize("n", range(6))
def test_parallel(mailmodes, worker_id, n):
    address = mailmodes.address("bob")
    with smtplib.SMTP(mailmodes.host, mailmodes.port("smtp-plaintext"), timeout=10) as client:
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", [address], f"To: {{address}}\\r\\nSubject: {{n}}\\r\\n\\r\\n".encode())
    [message] = mailmodes.wait_for_messages(to=address, timeout=10)
    assert message.subject == str(n)
    with open(os.path.join({str(seen)!r}, f"{{n}}.json"), "w") as file:
        json.dump({{"worker": worker_id, "address": address}}, file)
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--mailmodes-url",
                                           f"http://127.0.0.1:{running.http_port}")
    result.assert_outcomes(passed=6)
    records = [json.loads(path.read_text()) for path in Path(seen).iterdir()]
    assert {record["worker"] for record in records} == {"gw0", "gw1"}
    assert len({record["address"] for record in records}) == 6
