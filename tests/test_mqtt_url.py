"""The MQTT URL parser: a target for what it accepts, a ValueError naming the URL for anything
else, and round trips of generated URLs with user, password and port.

Expected values are written by hand or built with the standard library's own percent-encoding
(``urllib.parse.quote``) and ``ipaddress``, never with the parser under test.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.mqtt_url import MqttTarget, parse_mqtt_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", MqttTarget("127.0.0.1", 1884)),
        ("broker.local", MqttTarget("broker.local", 1883)),
        ("mqtt://Broker.Example", MqttTarget("broker.example", 1883)),  # DNS names ignore case
        ("mqtt://h:", MqttTarget("h", 1883)),  # RFC 3986: an empty port is the default
        ("mqtt://h:65535/", MqttTarget("h", 65535)),
        ("mqtt://[::1]:1884", MqttTarget("::1", 1884)),
        ("mqtt://u%40x:p@h", MqttTarget("h", 1883, "u@x", "p")),
        ("mqtt://van%3A1:p%3Aw%2F@mosquitto_1:8883", MqttTarget("mosquitto_1", 8883, "van:1", "p:w/")),
        ("mqtt://u:p@ss@h", MqttTarget("h", 1883, "u", "p@ss")),  # the last @ ends the user info
        ("mqtt://u:@h", MqttTarget("h", 1883, "u", None)),
        ("mqtt://u@h", MqttTarget("h", 1883, "u", None)),
    ],
)
def test_accepted(url: str, expected: MqttTarget) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h", "only mqtt://"),
        ("mqtt://", "no host"),
        ("mqtt://h:99999", "bad port"),
        ("mqtt://h:0", "bad port"),  # urlsplit reads 0, which used to become 1883
        ("mqtt://h:+1", "bad port"),
        ("mqtt://h:\uff11\uff12", "bad port"),  # int() would read full-width digits
        ("mqtt://bro\tker", "whitespace"),  # urlsplit silently deletes tabs and newlines
        ("mqtt://broker\n", "whitespace"),
        ("mqtt://h/topic", "path"),
        ("mqtt://h?x=1", "query"),
        ("mqtt://h#f", "fragment"),
        ("mqtt://[::1", "bad host"),
        ("mqtt://[zz]:1", "bad host"),
        ("mqtt://-broker", "not a host name"),
        ("mqtt://1.2.3.999", "not a host name"),
        ("mqtt://br%6fker", "not a host name"),
        ("mqtt://:secret@h", "password needs a user"),
        ("mqtt://%ff:p@h", "not valid UTF-8"),
    ],
)
def test_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_mqtt_url(url)


def check_target(url: str, target: MqttTarget) -> None:
    assert 1 <= target.port <= 65535, url
    assert target.host and not any(c.isspace() for c in target.host), url
    assert target.username != "" and target.password != "", url
    assert target.password is None or target.username is not None, url


@settings(max_examples=500, deadline=None)
@given(
    st.text()
    | st.builds(lambda a, b: f"mqtt://{a}{b}", st.text(max_size=12), st.text(max_size=8))
    | st.from_regex(r"(mqtt://)?([^@/]{0,6}@)?[A-Za-z0-9.\-\[\]:_%]{0,20}(:[0-9+]{0,6})?/?", fullmatch=True)
)
def test_any_string_is_a_target_or_a_value_error(url: str) -> None:
    try:
        target = parse_mqtt_url(url)
    except ValueError as exc:
        assert str(exc).startswith((url, repr(url))), str(exc)
        return
    check_target(url, target)
    assert parse_mqtt_url(str(target)) == MqttTarget(target.host, target.port)


dns_names = st.from_regex(
    r"[a-z0-9]([a-z0-9_-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True
)
hosts = st.one_of(
    dns_names.filter(lambda h: not h.replace(".", "").isdigit()),  # all-digit names are IPv4
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
credentials = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    host=hosts,
    port=st.none() | st.integers(1, 65535),
    username=st.none() | credentials,
    password=st.none() | credentials,
)
def test_generated_urls_round_trip(
    host: str, port: int | None, username: str | None, password: str | None
) -> None:
    if username is None:
        password = None
    netloc = f"[{host}]" if ":" in host else host  # only an IPv6 address has colons
    if port is not None:
        netloc += f":{port}"
    if username is not None:
        user_info = quote(username, safe="")
        if password is not None:
            user_info += ":" + quote(password, safe="")
        netloc = f"{user_info}@{netloc}"
    target = parse_mqtt_url(f"mqtt://{netloc}")
    assert target == MqttTarget(host, port or 1883, username, password)
    assert parse_mqtt_url(str(target)) == MqttTarget(host, port or 1883)  # str() leaves out secrets
