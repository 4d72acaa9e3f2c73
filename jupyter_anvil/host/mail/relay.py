"""Where outbound mail goes: the SMTP relay named by ``--AnvilApp.smtp_relay_url``.

Three schemes, each with its own default port::

    smtp://user@host:587     submission; upgrades with STARTTLS whenever the relay offers it
    smtps://user@host:465    implicit TLS from the first byte
    smtp+plain://host:25     never upgrades: for local test relays only

The user (and a password, though the URL is a poor place for one) are percent-decoded.
The password comes from the ``password`` argument (the ``smtp_relay_password`` trait),
else from the URL, else from ``$JUPYTER_ANVIL_SMTP_PASSWORD``. It never appears in a
``repr``, a log line, an error or a record: what is shown is :attr:`RelayConfig.shown`
(``smtp://user:***@host:587``), and relay replies pass through :meth:`RelayConfig.scrub`.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import quote, unquote, urlsplit

Scheme = Literal["smtp", "smtps", "smtp+plain"]
DEFAULT_PORTS: Final[dict[Scheme, int]] = {"smtp": 587, "smtps": 465, "smtp+plain": 25}
PASSWORD_ENV: Final = "JUPYTER_ANVIL_SMTP_PASSWORD"  # noqa: S105 (a name, not a password)
#: seconds to connect, and to wait for each reply of the relay
DEFAULT_TIMEOUT: Final = 30.0

# a host name (letters, digits, hyphens, dots; IDNs as Unicode letters) or an IP literal
_HOST_NAME = re.compile(r"[\w.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, however malformed the rest is: all
    between the first ``:`` after ``//`` and the last ``@`` goes, even a password with an
    unescaped ``/`` or ``@`` in it."""
    head, slashes, rest = url.partition("//")
    if not slashes:  # no scheme given ("user:pass@host"): what comes before the last @ is as secret
        head, rest = "", url
    userinfo, at, after = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{head}{slashes}{userinfo.partition(':')[0]}:***@{after}"


@dataclass(frozen=True)
class RelayConfig:
    """A usable relay: scheme, host, port, credentials and how TLS is checked."""

    scheme: Scheme
    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)
    #: check the relay's certificate (and its name); off only for a relay you trust otherwise
    verify_tls: bool = True
    #: a PEM file of CA certificates to trust instead of the system's (a private relay)
    ca_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if self.user is not None and not self.password:
            raise ValueError(
                f"the mail relay {self.shown} names the user {self.user!r} but no password was given "
                f"(set AnvilApp.smtp_relay_password or ${PASSWORD_ENV})"
            )
        if not (self.timeout > 0):
            raise ValueError(f"the mail relay's timeout must be a positive number of seconds, not {self.timeout!r}")
        if self.uses_tls:
            self.tls_context()  # a CA file that cannot be read is a start-up error, not a failed send

    @classmethod
    def from_url(
        cls,
        url: str,
        password: str | None = None,
        *,
        verify_tls: bool = True,
        ca_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
    ) -> RelayConfig:
        """Parse ``url``; ValueError (never showing a password) when it cannot be used."""
        if not isinstance(url, str) or not url.strip():
            raise ValueError("the mail relay URL is empty")
        shown = redact_url(url.strip())
        if _CONTROL.search(url):
            raise ValueError(f"the mail relay URL {shown!r} holds control characters")
        try:
            parts = urlsplit(url.strip())
            port_given = parts.port
        except ValueError:
            raise ValueError(f"the mail relay URL {shown!r} has a bad port (1 to 65535)") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(
                f"the mail relay URL {shown!r} must start smtp://, smtps:// or smtp+plain://, "
                f"not {parts.scheme or '(no scheme)'}"
            )
        host = parts.hostname or ""
        if not host or not (_HOST_NAME.fullmatch(host) or _is_ip_literal(host)):
            raise ValueError(f"the mail relay URL {shown!r} names no host")
        if port_given == 0:
            raise ValueError(f"the mail relay URL {shown!r} has a bad port (1 to 65535)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"the mail relay URL {shown!r} may hold only user, host and port (no path or query)")
        if parts.password and not parts.username:
            raise ValueError(f"the mail relay URL {shown!r} has a password but no user (smtp://user:password@host)")
        user = unquote(parts.username) if parts.username else None
        env = os.environ if environ is None else environ
        secret = password or (unquote(parts.password) if parts.password else None) or env.get(PASSWORD_ENV) or None
        typed: Scheme = "smtps" if scheme == "smtps" else "smtp+plain" if scheme == "smtp+plain" else "smtp"
        return cls(
            scheme=typed,
            host=host,
            port=port_given or DEFAULT_PORTS[typed],
            user=user,
            password=secret if user is not None else None,
            verify_tls=verify_tls,
            ca_file=ca_file or None,
            timeout=timeout,
        )

    @property
    def shown(self) -> str:
        """The URL as logs and errors show it: the password is always ``***``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        who = f"{quote(self.user, safe='')}:***@" if self.user is not None else ""
        return f"{self.scheme}://{who}{host}:{self.port}"

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"RelayConfig({self.shown!r}, verify_tls={self.verify_tls}, ca_file={self.ca_file!r})"

    @property
    def uses_tls(self) -> bool:
        """Whether TLS may be used at all (smtp+plain never upgrades)."""
        return self.scheme != "smtp+plain"

    def tls_context(self) -> ssl.SSLContext:
        """The context the relay's certificate is checked with (a ValueError if the CA file is bad)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot read the mail relay's CA file {self.ca_file!r}: {e}") from None
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def scrub(self, text: str) -> str:
        """``text`` (a relay's reply, an error) without the password, plain or as sent in AUTH."""
        if not self.password:
            return text
        secrets = [self.password]
        if self.user is not None:
            for plain in (f"\0{self.user}\0{self.password}", self.password):
                secrets.append(base64.b64encode(plain.encode("utf-8")).decode("ascii"))
        for secret in secrets:
            if len(secret) >= 3:  # a shorter one would blank out half of any text
                text = text.replace(secret, "***")
        return text


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
