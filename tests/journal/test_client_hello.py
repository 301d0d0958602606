"""What the journal reads out of a ClientHello, byte for byte: the name it asks for (SNI) and
whether it asks for the certificate's status (status_request), from real ClientHellos made by
Python's ssl and from hand-built ones."""

from __future__ import annotations

import ssl

import pytest

from mailmodes.tls.handshake import asks_certificate_status, client_hello_extensions, client_hello_sni


def python_client_hello(server_name: str | None) -> bytes:
    """The first record Python's ssl sends as a client (a real ClientHello, nothing faked)."""
    context = ssl.create_default_context()
    outgoing = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name) if server_name else \
        ssl._create_unverified_context().wrap_bio(ssl.MemoryBIO(), outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def built_client_hello(extensions: list[tuple[int, bytes]]) -> bytes:
    """A ClientHello handshake message (RFC 8446 4.1.2) with the given extensions."""
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    listed = b"".join(kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data for kind, data in extensions)
    body += len(listed).to_bytes(2, "big") + listed
    return b"\x01" + len(body).to_bytes(3, "big") + body


def test_the_name_python_asks_for_is_read_from_its_client_hello() -> None:
    record = python_client_hello("mail.example.test")
    assert client_hello_sni(record) == "mail.example.test"
    assert client_hello_sni(python_client_hello(None)) is None


def test_python_never_asks_for_the_certificate_status() -> None:
    message = python_client_hello("mail.example.test")[5:]  # past the record header
    kinds = [kind for kind, _ in client_hello_extensions(message)]
    assert 0 in kinds and 43 in kinds  # server_name, supported_versions: the walk found real extensions
    assert not asks_certificate_status(message)


def test_status_request_is_found_wherever_it_is_listed() -> None:
    status_request = (5, b"\x01\x00\x00\x00\x00")  # RFC 6066 section 8: ocsp, no responder ids, no extensions
    assert asks_certificate_status(built_client_hello([status_request]))
    assert asks_certificate_status(built_client_hello([(10, b"\x00\x02\x00\x1d"), status_request]))
    assert not asks_certificate_status(built_client_hello([(10, b"\x00\x02\x00\x1d")]))


@pytest.mark.parametrize("cut", [0, 1, 5, 40, 43, 47, 49, 52])
def test_a_cut_short_client_hello_is_read_as_far_as_it_goes(cut: int) -> None:
    message = built_client_hello([(10, b"\x00\x02\x00\x1d"), (5, b"\x01\x00\x00\x00\x00")])
    assert not asks_certificate_status(message[:cut])
    assert client_hello_sni(b"\x16\x03\x01\x00\x05" + message[:cut]) is None
