"""Where events may go: destinations' syntax, the allow-list (GVW_NOTIFY_DESTINATIONS),
and a webhook's address checks (worker/events/destinations.py)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pydantic import SecretStr

from tasks.errors import InvalidJob
from worker.contract.jobs import parse_job
from worker.contract.names import QUEUE
from worker.events.destinations import (
    DeliveryRefused,
    check_notify,
    parse_destination,
    pinned_addresses,
    route_for,
    shown,
)
from worker.settings import (
    FLEET_QUEUE,
    NotifyRoute,
    Settings,
    SettingsInvalid,
    describe_settings_error,
    parse_notify_routes,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ALLOW = (
    f'{{"https://hooks.example.com/gvw/": {{"secret": "{SECRET}"}}, '
    '"sqs:gvw-": {}, "sns:arn:aws:sns:us-east-1:123456789012:gvw-": {}, '
    '"celery:callbacks/": {}}'
)


def routes(text: str = ALLOW) -> tuple[NotifyRoute, ...]:
    return parse_notify_routes(text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("https://hooks.example.com/gvw/jobs?token=1", "webhook"),
        ("http://127.0.0.1:8080/hook", "webhook"),
        ("https://[::1]:8443/x", "webhook"),
        ("sqs:gvw-done", "sqs"),
        ("sqs:gvw-done.fifo", "sqs"),
        ("sns:arn:aws:sns:eu-west-1:123456789012:gvw-done", "sns"),
        ("celery:callbacks/app.tasks.done", "celery"),
    ],
)
def test_destinations_of_each_kind_parse(text: str, kind: str) -> None:
    assert parse_destination(text).kind == kind


def test_a_destination_knows_its_parts() -> None:
    hook = parse_destination("https://Hooks.Example.com:8443/a/b?c=d")
    assert (hook.scheme, hook.host, hook.port, hook.target) == (
        "https",
        "hooks.example.com",
        8443,
        "/a/b?c=d",
    )
    assert parse_destination("https://h.example.com").port == 443
    topic = parse_destination("sns:arn:aws:sns:eu-west-1:123456789012:done")
    assert topic.region == "eu-west-1"
    task = parse_destination("celery:callbacks/app.tasks.done")
    assert (task.name, task.task) == ("callbacks", "app.tasks.done")


@pytest.mark.parametrize(
    "text",
    [
        "ftp://hooks.example.com/x",
        "https://user:pw@hooks.example.com/gvw/",
        "https://hooks.example.com/gvw/../admin",
        "https://hooks.example.com/gvw/%2e%2e/admin",
        "https://hooks.example.com/gvw/a%2Fb",
        "https://hooks.example.com/gvw\\x",
        "https://hooks.example.com/gvw/#frag",
        "https://hooks.example.com/gvw/ x",
        "https:///nohost",
        "https://hooks.example.com:99999/",
        "sqs:bad name",
        "sqs:" + "q" * 90,
        "sns:not-an-arn",
        "celery:callbacks",
        f"celery:{QUEUE}/vision.analyze",
        "redis://127.0.0.1:6379/0",
    ],
)
def test_malformed_destinations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_destination(text)


def test_the_allow_list_picks_the_longest_prefix() -> None:
    allowed = routes(
        f'{{"https://hooks.example.com/": {{"secret": "{SECRET}"}}, '
        f'"https://hooks.example.com/gvw/": {{"secret": "{SECRET}", '
        '"allow_private_addresses": true}}'
    )
    route = route_for("https://hooks.example.com/gvw/x", allowed)
    assert route is not None and route.prefix == "https://hooks.example.com/gvw/"
    assert route.allow_private_addresses
    other = route_for("https://hooks.example.com/other", allowed)
    assert other is not None and other.prefix == "https://hooks.example.com/"


def test_a_job_naming_a_destination_outside_the_allow_list_is_invalid() -> None:
    check_notify(["https://hooks.example.com/gvw/a", "sqs:gvw-x", "celery:callbacks/t"], routes())
    for notify, field in (
        (["sqs:gvw-x", "https://hooks.example.com.evil.net/gvw/"], "notify.1"),
        (["https://hooks.example.com/other/"], "notify.0"),
        (["http://hooks.example.com/gvw/"], "notify.0"),  # http only where listed
        (["sqs:other"], "notify.0"),
        (["celery:other/t"], "notify.0"),
        (["sqs:gvw-ok", "sqs:gvw-ok", "nonsense"], "notify.2"),
    ):
        with pytest.raises(InvalidJob) as caught:
            check_notify(notify, routes())
        assert caught.value.details["field"] == field
        assert field in caught.value.message


def test_a_job_names_at_most_five_destinations() -> None:
    job = {"task": "caption", "images": ["s3://in/a.jpg"]}
    assert parse_job({**job, "notify": ["sqs:a" + str(i) for i in range(5)]}).notify
    with pytest.raises(InvalidJob, match="notify"):
        parse_job({**job, "notify": ["sqs:a" + str(i) for i in range(6)]})
    with pytest.raises(InvalidJob, match="notify"):
        parse_job({**job, "notify": "sqs:a"})


def test_notify_is_not_part_of_the_job_fingerprint() -> None:
    job = {"job_id": "j", "task": "caption", "images": ["s3://in/a.jpg"]}
    plain = parse_job(job).fingerprint("s3://out/j")
    assert parse_job({**job, "notify": ["sqs:gvw-a"]}).fingerprint("s3://out/j") == plain


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"https://hooks.example.com/": {}}', 'needs "secret"'),
        ('{"https://hooks.example.com/": {"secret": "nope"}}', 'needs "secret"'),
        (f'{{"https://hooks.example.com": {{"secret": "{SECRET}"}}}}', "ends it with '/'"),
        (f'{{"https://": {{"secret": "{SECRET}"}}}}', "names a host"),
        ('{"ftp://x/": {}}', "must start with"),
        ('{"celery:": {}}', "names a queue"),
        (f'{{"celery:{FLEET_QUEUE}/": {{}}}}', "names a queue"),
        (f'{{"sqs:gvw-": {{"secret": "{SECRET}"}}}}', "only a webhook prefix"),
        ('{"sqs:gvw-": {"retries": 3}}', "unknown options"),
        ("[1]", "JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_allow_list_is_a_settings_error_that_hides_secrets(text: str, problem: str) -> None:
    with pytest.raises(Exception) as caught:
        Settings(gvw_notify_destinations=text)
    line = describe_settings_error(caught.value)  # type: ignore[arg-type]
    assert problem in line
    assert line.startswith("invalid setting: GVW_NOTIFY_DESTINATIONS=<hidden>:")
    assert SECRET not in line and "\n" not in line


def test_get_settings_says_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.settings import get_settings

    monkeypatch.setenv("GVW_NOTIFY_DESTINATIONS", '{"https://hooks.example.com/": {}}')
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsInvalid, match="GVW_NOTIFY_DESTINATIONS"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_secrets_never_show_in_a_repr() -> None:
    settings = Settings(gvw_notify_destinations=ALLOW)
    assert SECRET not in repr(settings)
    assert SECRET not in repr(settings.notify_routes)
    assert SECRET not in str(settings.model_dump())
    assert settings.notify_secrets == (SECRET,)


def test_the_fleet_queue_named_in_settings_is_the_contract_s() -> None:
    assert FLEET_QUEUE == QUEUE


def test_shown_leaves_a_webhook_s_query_out() -> None:
    assert shown("https://h.example.com/a?token=s3cret") == "https://h.example.com/a"
    assert shown("sqs:gvw-a") == "sqs:gvw-a"
    assert len(shown("https://h.example.com/" + "a" * 500)) <= 201


# --- the address of a webhook -------------------------------------------------------------


def resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        family = socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return resolve


def route(prefix: str, *, private: bool = False) -> NotifyRoute:
    return NotifyRoute(prefix, SecretStr(SECRET), private)


def test_a_public_address_is_used() -> None:
    dest = parse_destination("https://hooks.example.com/gvw/a")
    assert pinned_addresses(
        dest, route("https://hooks.example.com/"), resolver("93.184.216.34")
    ) == ["93.184.216.34"]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.5", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "not globally routable"),
    ],
)
def test_special_addresses_of_a_name_are_refused(address: str, why: str) -> None:
    dest = parse_destination("https://hooks.example.com/gvw/a")
    with pytest.raises(DeliveryRefused, match=why):
        pinned_addresses(dest, route("https://hooks.example.com/"), resolver(address))


def test_every_address_must_pass() -> None:
    dest = parse_destination("https://hooks.example.com/gvw/a")
    with pytest.raises(DeliveryRefused, match=r"10\.0\.0\.1"):
        pinned_addresses(
            dest, route("https://hooks.example.com/"), resolver("93.184.216.34", "10.0.0.1")
        )


def test_an_address_listed_literally_is_allowed() -> None:
    dest = parse_destination("http://127.0.0.1:8080/hook")
    assert pinned_addresses(dest, route("http://127.0.0.1:8080/"), resolver("127.0.0.1")) == [
        "127.0.0.1"
    ]
    # a name that resolves to it is not that address named
    named = parse_destination("http://localhost:8080/hook")
    with pytest.raises(DeliveryRefused, match="loopback"):
        pinned_addresses(named, route("http://localhost:8080/"), resolver("127.0.0.1"))
    # unless the entry says so
    assert pinned_addresses(
        named, route("http://localhost:8080/", private=True), resolver("127.0.0.1")
    ) == ["127.0.0.1"]


def test_a_name_that_does_not_resolve_is_a_failed_attempt() -> None:
    def fails(*_: Any, **__: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror("Name or service not known")

    dest = parse_destination("https://nowhere.example.com/gvw/a")
    with pytest.raises(ConnectionError, match="cannot resolve"):
        pinned_addresses(dest, route("https://nowhere.example.com/"), fails)


def test_doctor_lists_the_allowed_prefixes_never_their_secrets() -> None:
    from worker.cli.doctor import _notify

    allowed = Settings(gvw_notify_destinations=ALLOW)
    lines = [check.line() for check in _notify(allowed, None)]  # type: ignore[arg-type]
    assert "4 destination prefixes allowed" in lines[0] and "sqs:gvw-" in lines[0]
    assert not any(SECRET in line for line in lines)
    none = [check.line() for check in _notify(Settings(), None)]  # type: ignore[arg-type]
    assert "no destinations allowed" in none[0]
