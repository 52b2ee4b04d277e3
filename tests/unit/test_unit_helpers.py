"""The helpers every endpoint family shares, one of each: GUIDs, url-encoded forms and Basic credentials."""

from __future__ import annotations

import base64

import pytest

from shared.guid import GUID_PATTERN, is_canonical_guid, is_guid
from shared.http import (
    FORM_TYPE,
    FormError,
    NotAForm,
    RepeatedField,
    basic_authorization_header,
    parse_basic_credentials,
    parse_form,
)

pytestmark = pytest.mark.unit

GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize("value", [GUID, GUID.upper()])
def test_is_guid_takes_the_hyphenated_form_in_either_case(value: str) -> None:
    assert is_guid(value)


@pytest.mark.parametrize("value", ["", GUID.replace("-", ""), "{" + GUID + "}", GUID + "\n", " " + GUID,
                                   GUID[:-1], GUID + "0", GUID.replace("a", "g")])
def test_is_guid_refuses_every_other_spelling(value: str) -> None:
    assert not is_guid(value)


def test_only_lower_case_is_canonical() -> None:
    assert is_canonical_guid(GUID)
    assert not is_canonical_guid(GUID.upper())
    assert not is_canonical_guid("not-a-guid")


def test_the_openapi_pattern_is_the_same_pattern() -> None:
    from shared.manage_api import _GUID

    assert _GUID["pattern"] == f"^{GUID_PATTERN}$"


def test_parse_form_reads_each_field_once() -> None:
    assert parse_form(b"a=1&b=&c=x+y%21", FORM_TYPE + "; charset=utf-8") == {"a": "1", "b": "", "c": "x y!"}
    assert parse_form(b"", FORM_TYPE) == {}


@pytest.mark.parametrize("content_type", [None, "", "application/json", "multipart/form-data"])
def test_parse_form_refuses_other_media_types(content_type: str | None) -> None:
    with pytest.raises(NotAForm):
        parse_form(b"a=1", content_type)


@pytest.mark.parametrize("body", [b"\xff=1", b"novalue", "&".join(f"f{i}=1" for i in range(21)).encode()])
def test_parse_form_refuses_malformed_bodies_and_too_many_fields(body: bytes) -> None:
    with pytest.raises(FormError):
        parse_form(body, FORM_TYPE)


def test_repeated_fields_are_refused_all_or_only_the_named_ones() -> None:
    with pytest.raises(RepeatedField) as caught:
        parse_form(b"b=1&a=1&b=2", FORM_TYPE)
    assert caught.value.name == "b"
    assert parse_form(b"x=1&x=2&a=1", FORM_TYPE, single=("a",)) == {"x": "1", "a": "1"}
    with pytest.raises(RepeatedField):
        parse_form(b"a=1&a=2", FORM_TYPE, single=("a",))


@pytest.mark.parametrize(("client_id", "secret"), [("abc", "s3cret"), ("a:b c", "p%ss:w+rd é"), ("id", "")])
def test_basic_credentials_round_trip_form_encoded_RFC6749_2_3_1(client_id: str, secret: str) -> None:
    header = basic_authorization_header(client_id, secret)
    assert header.startswith("Basic ")
    assert parse_basic_credentials(header) == (client_id, secret)
    assert parse_basic_credentials("  basic " + header.split(" ", 1)[1] + " ") == (client_id, secret)


@pytest.mark.parametrize("header", [
    "Bearer " + base64.b64encode(b"a:b").decode(),
    "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode(b":secret").decode(),
    "Basic not*base64",
    "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    "Basic",
])
def test_parse_basic_credentials_refuses_what_is_not_well_formed_basic(header: str) -> None:
    with pytest.raises(ValueError, match="malformed Basic"):
        parse_basic_credentials(header)
