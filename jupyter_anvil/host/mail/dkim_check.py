"""DKIM checks of inbound mail (dkimpy), for ``Message.dkim`` and ``handle_message(require_dkim=True)``.

What counts, as in Anvil: only signatures over the whole message (no ``l=`` tag: a
signature over a prefix of the body lets anyone append to the body). ``domains`` lists the
``d=`` of every valid one; ``valid_from_sender`` says one of them is the From header's
domain, exactly (compared case-insensitively). A parent domain does not count: without the
public suffix list, "a parent of the sender's domain" would let ``d=co.uk`` vouch for
every ``*.co.uk``; a sender whose mail is signed by its parent domain reads
``valid_from_sender`` False and finds the parent in ``domains``.

The key lookups go through ``dnsfunc`` (dkimpy's ``dnsfunc(name: bytes, timeout=...)``,
answering the TXT record as bytes or None); by default dkimpy's own (dnspython). A DNS
lookup blocks: call :func:`check_dkim` on a worker thread. It never raises: a malformed
signature, message or key is just not valid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import dkim
from dkim.util import parse_tag_value

from ...protocol import DkimResult

#: signatures checked per message (each may cost a DNS lookup of up to ``DNS_TIMEOUT``):
#: a message carrying thousands cannot hold a worker thread for hours
MAX_SIGNATURES = 8
DNS_TIMEOUT = 5

#: ``dnsfunc(name, timeout=...)``: the TXT record at ``name`` (bytes, with the root's dot), or None
DnsFunc = Callable[..., "bytes | None"]

log = logging.getLogger(__name__)


class _Quiet(logging.LoggerAdapter):  # type: ignore[type-arg]
    """dkimpy logs each bad signature at ERROR: from mail anyone can send, that is noise
    (and the sender's text) in the server's log. Kept at DEBUG."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


_dkim_log = _Quiet(logging.getLogger(__name__ + ".dkimpy"), {})


def check_dkim(raw: bytes, from_domain: str, dnsfunc: DnsFunc | None = None) -> DkimResult:
    """The DKIM verdict on ``raw`` (the message as received) sent from ``from_domain``
    (the From header's domain; "" when it has none)."""
    domains: list[str] = []
    try:
        checker = dkim.DKIM(raw, logger=_dkim_log, timeout=DNS_TIMEOUT)
        signatures = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
    except Exception:  # a message dkimpy cannot read carries no valid signature
        log.debug("DKIM: message not readable", exc_info=True)
        return {"valid_from_sender": False, "domains": []}
    for index, header in enumerate(signatures[:MAX_SIGNATURES]):
        domain = _whole_message_domain(header)
        if domain is None or domain in domains:
            continue
        try:
            kwargs = {"dnsfunc": dnsfunc} if dnsfunc is not None else {}
            valid = bool(checker.verify(idx=index, **kwargs))
        except Exception:  # dkimpy raises on badly formed signatures and keys
            log.debug("DKIM: signature %d of d=%s not valid", index, domain, exc_info=True)
            valid = False
        if valid:
            domains.append(domain)
    sender = _normal(from_domain)
    return {"valid_from_sender": bool(sender) and sender in domains, "domains": domains}


def _whole_message_domain(header: bytes) -> str | None:
    """The ``d=`` of a signature over the whole message, or None (an ``l=`` tag, or no
    readable ``d=``: nothing it could vouch for)."""
    try:
        tags = parse_tag_value(header)
    except Exception:  # noqa: BLE001 - not a tag list: not a signature
        return None
    if b"l" in tags or not isinstance(tags.get(b"d"), bytes):
        return None
    try:
        return _normal(tags[b"d"].decode("ascii"))
    except UnicodeDecodeError:
        return None  # d= is ASCII (punycode) or not a domain


def _normal(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def records_resolver(records: Mapping[str, str]) -> DnsFunc:
    """A ``dnsfunc`` answering from ``records`` (TXT record name -> text), and nothing
    else: for tests (``--AnvilApp.mail_dkim_test_records``), never for real mail. Names
    match case-insensitively, with or without the root's dot."""
    table = {_normal(name): text.encode() for name, text in records.items()}

    def resolve(name: bytes | str, timeout: float = DNS_TIMEOUT) -> bytes | None:
        key = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        return table.get(_normal(key))

    return resolve
