"""shared.http.Headers folds header names on every way in, not only get, set and contains."""

from __future__ import annotations

import pytest

from shared.http import Headers

pytestmark = pytest.mark.unit


def test_construction_from_a_mapping_from_pairs_and_from_keywords_folds_names() -> None:
    assert Headers({"Content-Type": "a"}) == {"content-type": "a"}
    assert Headers([("Content-Type", "a"), ("X-Id", "1")]) == {"content-type": "a", "x-id": "1"}
    assert Headers(pair for pair in [("ACCEPT", "b")]) == {"accept": "b"}
    assert Headers({"Accept": "a"}, Authorization="x") == {"accept": "a", "authorization": "x"}
    assert Headers() == {} and Headers(None) == {} and Headers([]) == {}


def test_the_last_spelling_of_one_name_wins_as_one_key() -> None:
    headers = Headers([("X-Id", "1"), ("x-id", "2"), ("X-ID", "3")])
    assert headers == {"x-id": "3"} and len(headers) == 1


def test_item_access_get_and_contains_ignore_case() -> None:
    headers = Headers({"Content-Type": "a"})
    assert headers["CONTENT-TYPE"] == headers["content-type"] == "a"
    assert headers.get("Content-type") == "a" and headers.get("missing", "d") == "d"
    assert "CONTENT-type" in headers and "missing" not in headers and 1 not in headers


def test_delitem_ignores_case() -> None:
    headers = Headers({"Content-Type": "a", "Accept": "b"})
    del headers["CONTENT-TYPE"]
    assert headers == {"accept": "b"}
    with pytest.raises(KeyError):
        del headers["Content-Type"]


def test_pop_ignores_case_with_and_without_a_default() -> None:
    headers = Headers({"Authorization": "x"})
    assert headers.pop("AUTHORIZATION") == "x"
    assert headers == {}
    assert headers.pop("Authorization", None) is None
    with pytest.raises(KeyError):
        headers.pop("Authorization")


def test_setdefault_ignores_case() -> None:
    headers = Headers({"Accept": "a"})
    assert headers.setdefault("ACCEPT", "b") == "a"
    assert headers.setdefault("X-New", "n") == "n"
    assert headers == {"accept": "a", "x-new": "n"}


def test_update_from_a_mapping_pairs_and_keywords_folds_names() -> None:
    headers = Headers({"Accept": "a"})
    headers.update({"ACCEPT": "b"})
    headers.update([("X-Id", "1")])
    headers.update(Cache_Control="no-store")
    headers.update()
    assert headers == {"accept": "b", "x-id": "1", "cache_control": "no-store"}


def test_union_operators_fold_names_and_stay_headers() -> None:
    headers = Headers({"Accept": "a"})
    merged = headers | {"ACCEPT": "b", "X-Id": "1"}
    assert isinstance(merged, Headers) and merged == {"accept": "b", "x-id": "1"}
    assert headers == {"accept": "a"}, "| leaves the left side alone"
    headers |= [("ACCEPT", "c")]
    assert headers == {"accept": "c"}


def test_copy_is_an_independent_case_insensitive_headers() -> None:
    headers = Headers({"Accept": "a"})
    copied = headers.copy()
    assert isinstance(copied, Headers) and copied == headers
    copied["ACCEPT"] = "b"
    assert headers["accept"] == "a" and copied["Accept"] == "b"
