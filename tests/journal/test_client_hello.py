"""What the journal reads out of a ClientHello byte for byte, where no TLS layer is (a client set
for implicit TLS on a plaintext port): the name it asks for (SNI), from real ClientHellos made by
Python's ssl and from hand-built ones. Where TLS runs, OpenSSL itself is asked instead
(test_handshake_progress.py)."""

from __future__ import annotations

import ssl

import pytest

from mailmodes.tls.handshake import client_hello_extensions, client_hello_sni


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


def test_the_extensions_of_a_real_client_hello_are_walked() -> None:
    message = python_client_hello("mail.example.test")[5:]  # past the record header
    kinds = [kind for kind, _ in client_hello_extensions(message)]
    assert 0 in kinds and 43 in kinds  # server_name, supported_versions: the walk found real extensions
    assert 5 not in kinds  # Python never asks for the certificate's status


def test_the_extensions_are_found_wherever_they_are_listed() -> None:
    status_request = (5, b"\x01\x00\x00\x00\x00")  # RFC 6066 section 8: ocsp, no responder ids, no extensions
    assert [kind for kind, _ in client_hello_extensions(built_client_hello([(10, b"\x00\x02\x00\x1d"),
                                                                           status_request]))] == [10, 5]


@pytest.mark.parametrize("cut", [0, 1, 5, 40, 43, 47, 49, 52])
def test_a_cut_short_client_hello_is_read_as_far_as_it_goes(cut: int) -> None:
    message = built_client_hello([(10, b"\x00\x02\x00\x1d"), (5, b"\x01\x00\x00\x00\x00")])
    walked = list(client_hello_extensions(message[:cut]))
    assert sum(4 + len(body) for _, body in walked) <= max(0, cut - 47)  # 47: where the extensions begin
    assert all(kind == 10 for kind, _ in walked)  # the cut is before the second one's header
    assert client_hello_sni(b"\x16\x03\x01\x00\x05" + message[:cut]) is None
