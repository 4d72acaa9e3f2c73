"""DKIM checks of inbound mail (host/mail/dkim_check.py): real dkimpy signatures made with
a real RSA key, the public key served by a resolver answering from a dict."""

from __future__ import annotations

import base64
from functools import cache

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_anvil.host.mail.dkim_check import MAX_SIGNATURES, check_dkim, records_resolver

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: support@apps.test\r\n"
    b"Subject: Hello\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello there.\r\n"
)


@cache
def key(bits: int = 2048) -> tuple[bytes, str]:
    """A private key (PKCS#1 PEM, as dkimpy signs with) and its DNS TXT record."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def signed(message: bytes, domain: str, selector: str = "sel", length: bool = False, bits: int = 2048) -> bytes:
    pem, _ = key(bits)
    header = dkim.sign(message, selector.encode(), domain.encode(), pem, length=length)
    return bytes(header) + message


def resolver(*domains: str, selector: str = "sel", bits: int = 2048) -> dict[str, str]:
    return {f"{selector}._domainkey.{d}": key(bits)[1] for d in domains}


def test_a_valid_signature_from_the_sender() -> None:
    result = check_dkim(signed(MESSAGE, "example.com"), "example.com", records_resolver(resolver("example.com")))
    assert result == {"valid_from_sender": True, "domains": ["example.com"]}


def test_the_from_domain_compares_without_case_or_root_dot() -> None:
    dns = records_resolver(resolver("example.com"))
    assert check_dkim(signed(MESSAGE, "Example.COM"), "EXAMPLE.com.", dns)["valid_from_sender"]


def test_unsigned_mail() -> None:
    assert check_dkim(MESSAGE, "example.com", records_resolver({})) == {"valid_from_sender": False, "domains": []}


def test_a_valid_signature_of_another_domain() -> None:
    result = check_dkim(signed(MESSAGE, "relay.net"), "example.com", records_resolver(resolver("relay.net")))
    assert result == {"valid_from_sender": False, "domains": ["relay.net"]}


def test_a_parent_domain_is_not_the_sender() -> None:
    """Chosen: exactly the From domain (a parent is listed in domains, not trusted for it)."""
    dns = records_resolver(resolver("example.com"))
    result = check_dkim(signed(MESSAGE, "example.com"), "mail.example.com", dns)
    assert result == {"valid_from_sender": False, "domains": ["example.com"]}


def test_a_changed_body_breaks_the_signature() -> None:
    tampered = signed(MESSAGE, "example.com").replace(b"Hello there.", b"Pay me now.")
    assert check_dkim(tampered, "example.com", records_resolver(resolver("example.com")))["domains"] == []


def test_a_changed_signed_header_breaks_the_signature() -> None:
    tampered = signed(MESSAGE, "example.com").replace(b"Subject: Hello", b"Subject: Urgent")
    assert check_dkim(tampered, "example.com", records_resolver(resolver("example.com")))["domains"] == []


def test_no_key_in_dns() -> None:
    assert check_dkim(signed(MESSAGE, "example.com"), "example.com", records_resolver({}))["domains"] == []


def test_another_key_in_dns() -> None:
    dns = records_resolver(resolver("example.com", bits=1024))  # the record of a different key
    assert check_dkim(signed(MESSAGE, "example.com"), "example.com", dns)["domains"] == []


def test_a_body_length_signature_does_not_count() -> None:
    """An ``l=`` signature covers a prefix of the body: anyone may append to it."""
    message = signed(MESSAGE, "example.com", length=True)
    assert b"l=" in message.split(b"\r\n\r\n")[0]  # the signature has its body length tag
    appended = message + b"Also, pay me.\r\n"
    dns = records_resolver(resolver("example.com"))
    assert dkim.verify(appended, dnsfunc=dns)  # dkimpy alone calls it valid...
    assert check_dkim(appended, "example.com", dns) == {"valid_from_sender": False, "domains": []}  # ...not here


def test_two_signatures_one_valid() -> None:
    message = signed(signed(MESSAGE, "example.com"), "relay.net")
    dns = records_resolver(resolver("example.com"))  # relay.net publishes no key
    assert check_dkim(message, "example.com", dns) == {"valid_from_sender": True, "domains": ["example.com"]}
    both = records_resolver(resolver("example.com", "relay.net"))
    assert check_dkim(message, "example.com", both)["domains"] == ["relay.net", "example.com"]


@pytest.mark.parametrize(
    "header",
    [
        b"DKIM-Signature: garbage\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=; b=\r\n",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=!!!!\r\n",
        b"DKIM-Signature: v=1; d=\xff\xfe; s=sel\r\n",
        b"DKIM-Signature:\r\n",
    ],
)
def test_malformed_signatures_are_just_invalid(header: bytes) -> None:
    dns = records_resolver(resolver("example.com"))
    assert check_dkim(header + MESSAGE, "example.com", dns) == {"valid_from_sender": False, "domains": []}
    # beside a good one, the good one still counts
    assert check_dkim(header + signed(MESSAGE, "example.com"), "example.com", dns)["valid_from_sender"]


def test_a_failing_resolver_is_no_signature() -> None:
    def broken(name: bytes, timeout: float = 5) -> bytes | None:
        raise OSError("DNS is down")

    assert check_dkim(signed(MESSAGE, "example.com"), "example.com", broken)["domains"] == []


def test_signatures_checked_are_bounded() -> None:
    asked: list[bytes] = []

    def counting(name: bytes, timeout: float = 5) -> bytes | None:
        asked.append(name)
        return None

    headers = b"".join(
        b"DKIM-Signature: v=1; a=rsa-sha256; d=d%d.example; s=sel; h=from; bh=AAAA; b=AAAA\r\n" % i
        for i in range(MAX_SIGNATURES * 10)
    )
    assert check_dkim(headers + MESSAGE, "example.com", counting)["domains"] == []
    assert len(asked) <= MAX_SIGNATURES


def test_no_from_domain() -> None:
    dns = records_resolver(resolver("example.com"))
    assert check_dkim(signed(MESSAGE, "example.com"), "", dns) == {
        "valid_from_sender": False,
        "domains": ["example.com"],
    }


def test_the_resolver_matches_names_leniently() -> None:
    resolve = records_resolver({"Sel._DomainKey.Example.com.": "v=DKIM1; p=x"})
    assert resolve(b"sel._domainkey.example.com.") == b"v=DKIM1; p=x"
    assert resolve("sel._domainkey.example.com", timeout=1) == b"v=DKIM1; p=x"
    assert resolve(b"other._domainkey.example.com.") is None


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=2000), from_domain=st.text(max_size=50))
def test_never_raises(raw: bytes, from_domain: str) -> None:
    result = check_dkim(b"DKIM-Signature: " + raw, from_domain, records_resolver({}))
    assert result["domains"] == [] and result["valid_from_sender"] is False
