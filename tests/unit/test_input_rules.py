"""The pure parts of the hostile-input rules (docs/security.md): the Host check's name,
JSON media types, the User-Agent kept in event metadata, the ALLOWED_HOSTS setting, and
search terms made of NFC text."""

import pytest
from pydantic import ValidationError

from api.command.routes import is_json_media_type
from api.common.middleware import host_name
from warriors.application.warrior_commands import USER_AGENT_MAX_LENGTH, client_user_agent
from warriors.config import Settings
from warriors.domain.values import parse_name
from warriors.readside.search_terms import fold_ascii, parse


@pytest.mark.parametrize(
    ("header", "name"),
    [
        (b"warriors.example", b"warriors.example"),
        (b"Warriors.EXAMPLE:8000", b"warriors.example"),
        (b"127.0.0.1:8000", b"127.0.0.1"),
        (b"[::1]:8000", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b"[::1", b"[::1"),  # malformed: matches no configured name
        (b"", b""),
    ],
)
def test_host_name_drops_the_port_and_case(header: bytes, name: bytes) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        " application/json ",
        "application/merge-patch+json",
        "application/vnd.warriors+json; version=1",
    ],
)
def test_json_media_types(content_type: str) -> None:
    assert is_json_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "application/jsonp",
        "application/json-seq",
        "application/xml",
        "json",
        "",
        "; application/json",
    ],
)
def test_other_media_types_are_not_json(content_type: str) -> None:
    assert not is_json_media_type(content_type)


def test_user_agent_is_bounded_and_printable() -> None:
    assert client_user_agent(None) is None
    assert client_user_agent("") is None
    assert client_user_agent("curl/8.5.0") == "curl/8.5.0"
    assert client_user_agent("x" * 1000) == "x" * USER_AGENT_MAX_LENGTH
    assert client_user_agent("a\tb\x00c\x7fd\x85e\u2028f\u202eg") == "abcdefg"
    assert client_user_agent("\x01" * 300 + "y" * 300) == "y" * USER_AGENT_MAX_LENGTH  # stripped, then cut
    assert client_user_agent("\r\n\t") is None
    assert client_user_agent("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/129.0") == (
        "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/129.0"
    )


def test_allowed_hosts_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    assert Settings().allowed_host_names() == frozenset()  # the default: any host
    settings = Settings(allowed_hosts=" Warriors.Example, 127.0.0.1 ,[::1],")
    assert settings.allowed_host_names() == {"warriors.example", "127.0.0.1", "[::1]"}


@pytest.mark.parametrize("value", ["https://warriors.example", "warriors.example:8000", "::1", "a b", "*"])
def test_allowed_hosts_refuses_what_is_not_a_host_name(value: str) -> None:
    with pytest.raises(ValidationError, match="is not a host name"):
        Settings(allowed_hosts=value)


def test_allowed_hosts_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "warriors.example,10.0.0.7")
    assert Settings().allowed_host_names() == {"warriors.example", "10.0.0.7"}


def test_search_terms_take_nfc_text() -> None:
    # A stored name is NFC; a term is folded like it (by the database when not ASCII, so
    # fold_ascii declines) and its words keep the precomposed letters whole.
    name = parse_name("Zoe\u0308 Jose\u0301")
    assert name == "Zo\u00eb Jos\u00e9"
    assert fold_ascii(name) is None
    assert [w.text for w in parse(name.lower()).words] == ["zo\u00eb", "jos\u00e9"]
    # Decomposed (NFD) input still gives whole words: the combining marks are dropped.
    assert [w.text for w in parse("zoe\u0308 jose\u0301").words] == ["zoe", "jose"]
