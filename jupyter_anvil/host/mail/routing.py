"""Which app takes mail for a recipient: the SMTP server asks at each ``RCPT TO``.

In the order checked (the first that names a served app wins):

1. the explicit map from configuration: a whole address (``sales@example.com``), then a
   whole domain (``@example.com``);
2. ``<anything>@<app>.<mail domain>``: the app named by the subdomain of the mail domain;
3. ``<app>@<any domain>``, with plus-addressing: ``<app>+<tag>@<any domain>``.

Domains are compared case-insensitively (DNS is), and so are local parts: an app named
``Support`` takes ``support@...`` unless another app is named exactly ``support`` (every
mail system in use folds the case of local parts, whatever RFC 5321 allows). Only the
served apps' names count (``AppManager.apps``): a map entry naming an app that is not
served routes nothing, so that its recipients are refused at ``RCPT`` rather than accepted
into nowhere. Pure: no I/O, and never raises, whatever string it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping


class MailRouter:
    def __init__(self, mail_domain: str | None, routes: Mapping[str, str], apps: Callable[[], Iterable[str]]) -> None:
        """``mail_domain``: the domain whose subdomains name apps (None: no such routing);
        ``routes``: the explicit map, address or ``@domain`` -> app; ``apps``: the names of
        the apps served now (asked at each routing: apps come and go)."""
        self.mail_domain = _domain(mail_domain) if mail_domain else None
        # keys folded once: an address's case never decides whether a map entry applies
        self.routes = {_fold_key(key): app for key, app in routes.items() if isinstance(key, str)}
        self.apps = apps

    def route(self, recipient: str) -> str | None:
        """The app that takes mail for ``recipient`` (an address as in ``RCPT TO``,
        without angle brackets), or None if no app does."""
        if not isinstance(recipient, str):
            return None
        local, at, domain_part = recipient.strip().rpartition("@")
        if not at or not local:
            return None  # not an address (a bare "postmaster" names no app either)
        local, domain = _unquote(local), _domain(domain_part)
        served = self._served()
        if not served:
            return None
        mapped = self.routes.get(f"{local.lower()}@{domain}") or self.routes.get(f"@{domain}")
        if mapped is not None:
            return _find(served, mapped)
        if self.mail_domain and domain.endswith("." + self.mail_domain):
            app = _find(served, domain[: -len(self.mail_domain) - 1])
            if app is not None:
                return app
        return _find(served, local.partition("+")[0])

    def _served(self) -> list[str]:
        try:
            return [name for name in self.apps() if isinstance(name, str)]
        except Exception:  # noqa: BLE001 - no list of apps: no route (refused, the sender retries later)
            return []


def _find(served: list[str], name: str) -> str | None:
    """The served app called ``name``: exactly, else the one app whose name differs only by case."""
    if not name:
        return None
    if name in served:
        return name
    folded = [app for app in served if app.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def _domain(text: str) -> str:
    """A domain as compared: lower case, without the root's trailing dot."""
    return text.strip().lower().rstrip(".")


def _unquote(local: str) -> str:
    """A local part without RFC 5321 quotes (``"sales"@x`` is ``sales@x``)."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return local[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return local


def _fold_key(key: str) -> str:
    local, at, domain = key.strip().rpartition("@")
    return f"{_unquote(local).lower()}{at}{_domain(domain)}"
