"""Routing inbound mail by recipient (host/mail/routing.py): which served app takes it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_anvil.host.mail.routing import MailRouter

APPS = ["support", "Sales", "orders.v2", "billing"]


def router(mail_domain: str | None = "mail.example.com", routes: dict[str, str] | None = None) -> MailRouter:
    return MailRouter(mail_domain, routes or {}, lambda: APPS)


@pytest.mark.parametrize(
    ("recipient", "app"),
    [
        ("support@anything.org", "support"),  # <app>@<any domain>
        ("support@[127.0.0.1]", "support"),  # an address literal is a domain too
        ("SUPPORT@Example.COM", "support"),  # local parts fold case
        ("sales@x.y", "Sales"),  # ...to the one app whose name differs only by case
        ("support+ticket-42@example.com", "support"),  # plus-addressing
        ("support+@example.com", "support"),
        ("orders.v2@example.com", "orders.v2"),  # app names may hold dots
        ("anyone@support.mail.example.com", "support"),  # <anything>@<app>.<mail domain>
        ("anyone@SUPPORT.Mail.Example.COM.", "support"),  # domains fold case; the root dot is no matter
        ("anyone@orders.v2.mail.example.com", "orders.v2"),
        ('"support"@example.com', "support"),  # a quoted local part is the same address
        ("  support@example.com  ", "support"),
    ],
)
def test_routes(recipient: str, app: str) -> None:
    assert router().route(recipient) == app


@pytest.mark.parametrize(
    "recipient",
    [
        "nobody@example.com",
        "postmaster",  # no domain: not an address
        "@example.com",  # no local part
        "",
        "@",
        "anyone@mail.example.com",  # the mail domain itself names no app
        "anyone@nobody.mail.example.com",  # a subdomain that names no app...
        "+support@example.com",  # the tag comes after the app, not before
        "supportx@example.com",
        "sup@port@example.com",  # the local part is everything before the last @
    ],
)
def test_refused(recipient: str) -> None:
    assert router().route(recipient) is None


def test_subdomain_routing_needs_a_mail_domain() -> None:
    assert router(mail_domain=None).route("anyone@support.mail.example.com") is None
    assert router(mail_domain=None).route("support@billing.mail.example.com") == "support"


def test_the_subdomain_names_the_app_before_the_local_part() -> None:
    assert router().route("support@billing.mail.example.com") == "billing"
    # a subdomain naming no app leaves the local part to route it
    assert router().route("support@nobody.mail.example.com") == "support"


def test_the_explicit_map_is_checked_first() -> None:
    routes = {"Help@Example.com": "support", "@orders.example.com": "orders.v2", "@billing.mail.example.com": "Sales"}
    r = router(routes=routes)
    assert r.route("help@EXAMPLE.com") == "support"  # a whole address, either case
    assert r.route("billing@orders.example.com") == "orders.v2"  # a whole domain wins over the local part
    assert r.route("anyone@billing.mail.example.com") == "Sales"  # and over the subdomain
    assert r.route("help@other.example.com") is None


def test_a_map_entry_for_an_app_not_served_routes_nothing() -> None:
    r = router(routes={"@example.com": "gone"})
    assert r.route("support@example.com") is None  # refused at RCPT, never accepted into nowhere
    assert r.route("support@example.org") == "support"


def test_two_apps_differing_only_by_case() -> None:
    r = MailRouter(None, {}, lambda: ["Shop", "shop"])
    assert r.route("shop@x") == "shop" and r.route("Shop@x") == "Shop"
    assert r.route("SHOP@x") is None  # ambiguous: refused rather than guessed


def test_the_served_apps_are_asked_at_each_route() -> None:
    served: list[str] = []
    r = MailRouter(None, {}, lambda: served)
    assert r.route("late@example.com") is None
    served.append("late")
    assert r.route("late@example.com") == "late"


def test_a_failing_app_list_routes_nothing() -> None:
    def broken() -> list[str]:
        raise RuntimeError("no apps")

    assert MailRouter(None, {}, broken).route("support@example.com") is None


@settings(max_examples=500, deadline=None)
@given(
    recipient=st.text(),
    mail_domain=st.one_of(st.none(), st.text()),
    routes=st.dictionaries(st.text(), st.sampled_from([*APPS, "gone"]), max_size=4),
)
def test_never_raises(recipient: str, mail_domain: str | None, routes: dict[str, str]) -> None:
    app = MailRouter(mail_domain, routes, lambda: APPS).route(recipient)
    assert app is None or app in APPS


@settings(max_examples=200, deadline=None)
@given(
    local=st.from_regex(r"[A-Za-z0-9._%-]{0,20}", fullmatch=True),
    domain=st.from_regex(r"[a-z0-9.-]{1,30}", fullmatch=True),
)
def test_an_app_name_as_the_local_part_always_routes(local: str, domain: str) -> None:
    assert router(mail_domain=None).route(f"billing+{local}@{domain}") == "billing"
