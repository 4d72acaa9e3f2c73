"""Send and receive email from server code, name for name with Anvil's ``anvil.email``::

    from jupyter_anvil import email, server

    @server.callable
    def contact(name, text):
        email.send(to="team@example.com", subject=f"Message from {name}", text=text)

    @email.handle_message
    def incoming(msg):
        msg.reply(text=f"Thanks for your mail about {msg.subject!r}!")

Mail is built here, in the app's kernel, and sent by the server (Jupyter), which holds any
relay password: server code never sees it. By default the server keeps outgoing mail in
its **outbox** (nothing leaves the machine; read it through ``anvil/api/mail``); it sends
for real once it is given an SMTP relay (``--AnvilApp.smtp_relay_url``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from . import wire as _wire
from .errors import DeliveryFailure, SendFailure
from .kernel import mail_compose as _compose
from .kernel import registry as _registry
from .kernel.mail_message import DKIM, Address, Addressees, Envelope, Message
from .kernel.mail_message import handler_for as _handler_for
from .protocol import EMAIL_HANDLER as _EMAIL_HANDLER
from .protocol import EMAIL_HANDLER_NAME as _EMAIL_HANDLER_NAME

__all__ = [
    "DKIM",
    "Address",
    "Addressees",
    "DeliveryFailure",
    "Envelope",
    "Message",
    "SendFailure",
    "SendReport",
    "handle_message",
    "send",
]

F = TypeVar("F", bound=Callable[..., Any])


class SendReport:
    """What :func:`send` returns: ``.message_id``, the ``Message-ID`` header the message
    was sent with (``<...@domain>``), to find it again in the outbox or a reply's
    ``In-Reply-To``."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id

    def __repr__(self) -> str:
        return f"<anvil.email.SendReport message_id={self.message_id!r}>"


_wire.register_portable_class(SendReport, "anvil.email.SendReport")


def send(**kw: Any) -> SendReport:
    """Send an email; returns a :class:`SendReport` once the server has taken it.

    Keywords (all optional, but there must be a recipient):

    * ``to``, ``cc``, ``bcc``: a str (``"joe@example.com"``, ``"Joe Bloggs <joe@example.com>"``,
      several separated by commas) or a list of str. Names may be Unicode, domains too.
      ``bcc`` addresses receive the message but appear in no header.
    * ``from_address``: default ``no-reply@<the server's mail domain>``; a bare name
      (``"support"``) gets ``@<the server's mail domain>``. ``from_name``: the sender's name
      (default: the name in ``from_address``, if any).
    * ``subject``, ``text`` (plain text), ``html``: str. With both text and html, mail
      readers show one of them.
    * ``attachments``: a Media or a list of Media, named after the Media (else
      ``"Attachment 1"``, ...). ``inline_attachments``: ``{content_id: Media}``, shown where
      the html says ``<img src="cid:content_id">``.
    * ``in_reply_to``, ``references``: the ``Message-ID`` (s) this mail answers, to thread it.
    * ``reply_to``: where replies should go (Anvil ignores it; here it is the Reply-To header).

    A malformed address raises :class:`SendFailure` (``"Invalid email address: ..."``), as
    does a value of the wrong type, a message with no recipient, more than 100 recipients,
    or one bigger than 25 MB once encoded (attachments grow by a third). An unknown keyword
    raises TypeError. If the relay refuses the message, or cannot be reached for a while,
    :class:`SendFailure` says so.
    """
    return SendReport(_compose.send(**kw))


@overload
def handle_message(fn: F, require_dkim: bool = False) -> F: ...
@overload
def handle_message(fn: None = None, require_dkim: bool = False) -> Callable[[F], F]: ...
def handle_message(fn: Any = None, require_dkim: bool = False) -> Any:
    """Make a function the app's email handler: it is called with a :class:`Message` for
    every email the app receives. ``@email.handle_message`` or
    ``@email.handle_message(require_dkim=True)``.

    Raise :class:`DeliveryFailure` to refuse the message (the sender's server is answered
    554, or the ``smtp_code`` given); any other exception is a temporary failure (451: the
    sender's server tries again later). With ``require_dkim=True``, mail without a valid
    DKIM signature from its sender's domain is refused before the function runs. What the
    function returns is ignored. An app has one handler: the last one registered. The
    function is returned unchanged.
    """
    if not isinstance(require_dkim, bool):
        raise TypeError(f"require_dkim must be True or False, not {type(require_dkim).__name__}")

    def decorate(function: F) -> F:
        if not callable(function):
            raise TypeError(
                f"@email.handle_message decorates a function, not {type(function).__name__}: "
                "write @email.handle_message or @email.handle_message(require_dkim=True)"
            )
        _registry.register(_EMAIL_HANDLER_NAME, _handler_for(function, require_dkim), kind=_EMAIL_HANDLER)
        return function

    return decorate if fn is None else decorate(fn)
