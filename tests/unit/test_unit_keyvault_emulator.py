"""The Key Vault emulator's seams, without sockets: the wire rules (protocol), the state (storage)
and the service that joins them. The SDK-driven suite (tests/test_keyvault_emulator.py) covers
the same emulator over HTTPS."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devtools.keyvault_emulator.control import FaultInjector, RequestStats
from devtools.keyvault_emulator.protocol import (
    EMULATOR_TENANT_ID,
    KeyVaultError,
    attribute_fields,
    bearer_token,
    challenge_resource,
    content_fields,
    decode_skiptoken,
    encode_skiptoken,
    json_object,
    page_size,
    parse_call,
    route,
)
from devtools.keyvault_emulator.service import VaultService
from devtools.keyvault_emulator.storage import (
    RECOVERABLE_DAYS,
    DeletedSecretNotFound,
    NameDeletedButRecoverable,
    SecretNotFound,
    VaultStore,
)

pytestmark = pytest.mark.unit

VAULT_URL = "https://127.0.0.1:8443"
API = "api-version=7.6"


def _record(value: str, version: str, **fields: object) -> dict[str, object]:
    return {"version": version, "value": value, "created": 1, "updated": 1, "enabled": True, **fields}


def _raises(call: Callable[..., object], *args: object) -> KeyVaultError:
    with pytest.raises(KeyVaultError) as caught:
        call(*args)
    return caught.value


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    ("method", "path", "operation", "groups"),
    [
        ("GET", "/secrets", "list", {}),
        ("GET", "/secrets/a/versions/", "list_versions", {"name": "a"}),
        ("GET", "/secrets/a", "get", {"name": "a"}),
        ("GET", "/secrets/a/", "get", {"name": "a", "version": ""}),
        ("GET", "/secrets/a/v1", "get", {"name": "a", "version": "v1"}),
        ("PUT", "/secrets/a%2Db", "set", {"name": "a-b"}),
        ("PATCH", "/secrets/a/v1", "update", {"name": "a", "version": "v1"}),
        ("DELETE", "/secrets/a", "delete", {"name": "a"}),
        ("DELETE", "/secrets/a/v1", "unsupported", {}),
        ("GET", "/deletedsecrets", "list_deleted", {}),
        ("GET", "/deletedsecrets/a", "get_deleted", {"name": "a"}),
        ("DELETE", "/deletedsecrets/a", "purge", {"name": "a"}),
        ("POST", "/deletedsecrets/a/recover", "recover", {"name": "a"}),
        ("POST", "/secrets", "unsupported", {}),
    ],
)
def test_a_route_is_the_method_and_path_together_with_names_unquoted(
    method: str, path: str, operation: str, groups: dict[str, str]
) -> None:
    assert route(method, path) == (operation, groups)


def test_a_missing_api_version_is_refused_before_an_unknown_route_or_a_bad_name() -> None:
    error = _raises(parse_call, "unsupported", {"name": "bad_name"}, "api-version=", b"")
    assert (error.status, error.code) == (400, "BadParameter")
    assert "api-version" in error.message


def test_an_unknown_route_is_405_and_an_invalid_name_400() -> None:
    assert _raises(parse_call, "unsupported", {}, API, b"").status == 405
    error = _raises(parse_call, "get", {"name": "a" * 128}, API, b"")
    assert (error.status, error.message) == (400, "The request URI contains an invalid name: " + "a" * 128)


def test_the_last_of_repeated_query_values_wins() -> None:
    call = parse_call("get", {"name": "a"}, "api-version=1&api-version=7.6&maxresults=", b"{}")
    assert call.query == {"api-version": "7.6", "maxresults": ""}
    assert (call.name, call.version, call.body) == ("a", "", b"{}")


def test_an_error_body_carries_code_message_and_inner_code_only_when_there_is_one() -> None:
    plain = KeyVaultError(400, "BadParameter", "no").response()
    inner = KeyVaultError(409, "Conflict", "gone", "ObjectIsDeletedButRecoverable", {"X": "1"}).response()
    assert plain.body == {"error": {"code": "BadParameter", "message": "no"}}
    assert inner.body == {
        "error": {"code": "Conflict", "message": "gone", "innererror": {"code": "ObjectIsDeletedButRecoverable"}}
    }
    assert inner.headers == {"X": "1"}


@pytest.mark.parametrize("authorization", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_anything_but_a_bearer_token_gets_the_challenge_naming_tenant_and_resource(authorization: str | None) -> None:
    error = _raises(bearer_token, authorization, "https://0.0.1:8443")
    assert error.status == 401
    assert error.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{EMULATOR_TENANT_ID}", resource="https://0.0.1:8443"'
    )


def test_a_bearer_scheme_is_matched_in_any_case_and_the_token_trimmed() -> None:
    assert bearer_token("bEaReR  tok ", "r") == "tok"


def test_the_challenge_resource_is_the_vault_host_minus_its_first_label_with_the_port() -> None:
    assert challenge_resource(VAULT_URL) == "https://0.0.1:8443"
    assert challenge_resource("https://myvault.vault.azure.net:443") == "https://vault.azure.net:443"


@pytest.mark.parametrize("raw", ["0", "26", "x", "", "-1", "2.0"])
def test_maxresults_outside_one_to_twenty_five_is_refused(raw: str) -> None:
    assert _raises(page_size, raw, 25).code == "BadParameter"


def test_maxresults_defaults_to_the_configured_page_size() -> None:
    assert (page_size(None, 7), page_size("25", 7), page_size("1", 7)) == (7, 25, 1)


def test_a_skiptoken_round_trips_and_garbage_is_refused() -> None:
    assert decode_skiptoken(encode_skiptoken("beta")) == "beta"
    assert decode_skiptoken(None) is None and decode_skiptoken("") is None
    assert _raises(decode_skiptoken, "_w").message == "The $skiptoken is not valid."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "The request body is not valid JSON."),
        (b"[1]", "The request body must be a JSON object."),
    ],
)
def test_a_body_must_be_a_json_object(body: bytes, message: str) -> None:
    assert _raises(json_object, body).message == message


def test_an_empty_body_is_an_empty_object() -> None:
    assert json_object(b"") == {}


@pytest.mark.parametrize(
    "params", [{"contentType": 5}, {"tags": {"a": 1}}, {"tags": []}], ids=["content-type", "tag-value", "tags-list"]
)
def test_content_type_and_tags_must_be_strings(params: dict[str, object]) -> None:
    assert _raises(content_fields, params).status == 400


def test_content_fields_keep_explicit_nulls_so_an_update_can_clear_them() -> None:
    assert content_fields({"value": "v", "contentType": None, "tags": None}) == {"contentType": None, "tags": None}


@pytest.mark.parametrize("attributes", [[], {"enabled": "yes"}, {"nbf": True}, {"exp": 1.5}])
def test_attributes_are_checked_by_type(attributes: object) -> None:
    assert _raises(attribute_fields, attributes).status == 400


def test_only_the_attributes_a_caller_may_set_are_taken() -> None:
    given = {"enabled": False, "nbf": None, "exp": 5, "created": 1, "recoveryLevel": "x"}
    assert attribute_fields(given) == {"enabled": False, "nbf": None, "exp": 5}
    assert attribute_fields({"enabled": None}) == {}


# --------------------------------------------------------------------------- storage


def test_names_are_case_insensitive_and_keep_the_spelling_of_their_first_set(tmp_path: Path) -> None:
    store = VaultStore(tmp_path / "vault.json")
    store.add_version("Alpha", _record("one", "v1"))
    assert store.add_version("ALPHA", _record("two", "v2"))[0] == "Alpha"
    assert store.find("alpha", "")[1]["value"] == "two"
    assert store.find("alpha", "V1")[1]["value"] == "one"
    assert [record["version"] for record in store.versions("aLpHa")[1]] == ["v1", "v2"]


def test_a_missing_version_is_named_as_name_slash_version(tmp_path: Path) -> None:
    store = VaultStore(tmp_path / "vault.json")
    store.add_version("a", _record("x", "v1"))
    with pytest.raises(SecretNotFound) as caught:
        store.find("a", "nope")
    assert caught.value.name == "a/nope"


def test_a_soft_deleted_name_cannot_be_set_until_it_is_recovered_or_purged(tmp_path: Path) -> None:
    store = VaultStore(tmp_path / "vault.json")
    store.add_version("Alpha", _record("one", "v1"))
    deleted = store.delete("alpha")
    assert deleted["scheduledPurgeDate"] - deleted["deletedDate"] == RECOVERABLE_DAYS * 86400
    with pytest.raises(NameDeletedButRecoverable) as caught:
        store.add_version("ALPHA", _record("two", "v2"))
    assert caught.value.name == "Alpha"
    assert store.recover("alpha") == ("Alpha", _record("one", "v1"))
    store.delete("alpha")
    store.purge("alpha")
    with pytest.raises(DeletedSecretNotFound):
        store.purge("alpha")
    store.add_version("alpha", _record("three", "v3"))
    assert [record["value"] for record in store.versions("alpha")[1]] == ["three"]


def test_deleted_secrets_are_purged_once_their_scheduled_date_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = VaultStore(tmp_path / "vault.json")
    store.add_version("a", _record("x", "v1"))
    purge_date = store.delete("a")["scheduledPurgeDate"]
    monkeypatch.setattr(time, "time", lambda: purge_date - 1)
    assert [key for key, _ in store.all_deleted()] == ["a"]
    monkeypatch.setattr(time, "time", lambda: purge_date)
    assert store.all_deleted() == []
    assert json.loads((tmp_path / "vault.json").read_text())["deleted"] == {}


def test_the_state_survives_a_restart_through_its_file(tmp_path: Path) -> None:
    VaultStore(tmp_path / "vault.json").add_version("a", _record("x", "v1", tags={"k": "v"}))
    assert VaultStore(tmp_path / "vault.json").find("a", "v1") == ("a", _record("x", "v1", tags={"k": "v"}))


def test_a_refused_change_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "vault.json"
    with pytest.raises(SecretNotFound):
        VaultStore(path).update("missing", "", {"enabled": False})
    assert not path.exists()


def test_callers_get_copies_so_changing_an_answer_changes_no_state(tmp_path: Path) -> None:
    store = VaultStore(tmp_path / "vault.json")
    store.add_version("a", _record("x", "v1", tags={"k": "v"}))
    store.find("a", "")[1]["tags"]["k"] = "changed"
    store.latest_versions()[0][2]["value"] = "changed"
    assert store.find("a", "")[1] == _record("x", "v1", tags={"k": "v"})


# --------------------------------------------------------------------------- service


class _Identity:
    """Accepts exactly one token, for the vault's challenge resource."""

    def validate(self, token: str, resource: str | None = None) -> bool:
        return token == "good" and resource == challenge_resource(VAULT_URL)


def _service(tmp_path: Path, page: int = 25) -> VaultService:
    store = VaultStore(tmp_path / "vault.json")
    return VaultService(store, _Identity(), VAULT_URL, FaultInjector(), RequestStats(), page)  # type: ignore[arg-type]  # a fake identity


def _send(service: VaultService, method: str, target: str, body: object = None) -> tuple[int, Any]:
    parts = urlsplit(target)
    raw = b"" if body is None else json.dumps(body).encode()
    response = service.handle(method, parts.path, parts.query, "Bearer good", raw)
    return response.status, response.body


def test_store_misses_and_conflicts_answer_key_vaults_error_bodies(tmp_path: Path) -> None:
    service = _service(tmp_path)
    status, body = _send(service, "GET", f"/secrets/nope?{API}")
    assert (status, body["error"]["code"]) == (404, "SecretNotFound")
    assert _send(service, "GET", f"/deletedsecrets/nope?{API}") == (
        404,
        {"error": {"code": "SecretNotFound", "message": "Deleted Secret not found: nope"}},
    )
    _send(service, "PUT", f"/secrets/Alpha?{API}", {"value": "x"})
    _send(service, "DELETE", f"/secrets/alpha?{API}")
    status, body = _send(service, "PUT", f"/secrets/alpha?{API}", {"value": "y"})
    assert (status, body["error"]["innererror"]) == (409, {"code": "ObjectIsDeletedButRecoverable"})


def test_a_disabled_secret_answers_403_yet_its_metadata_stays_readable(tmp_path: Path) -> None:
    service = _service(tmp_path)
    _send(service, "PUT", f"/secrets/a?{API}", {"value": "x", "attributes": {"enabled": False}})
    status, body = _send(service, "GET", f"/secrets/a?{API}")
    assert (status, body["error"]["innererror"]) == (403, {"code": "SecretDisabled"})
    status, body = _send(service, "GET", f"/secrets?{API}")
    assert status == 200 and "value" not in body["value"][0]


def test_the_secret_value_is_answered_only_by_set_and_get(tmp_path: Path) -> None:
    service = _service(tmp_path)
    assert _send(service, "PUT", f"/secrets/a?{API}", {"value": "x"})[1]["value"] == "x"
    assert _send(service, "GET", f"/secrets/a?{API}")[1]["value"] == "x"
    assert "value" not in _send(service, "PATCH", f"/secrets/a?{API}", {})[1]
    assert "value" not in _send(service, "DELETE", f"/secrets/a?{API}")[1]
    assert "value" not in _send(service, "POST", f"/deletedsecrets/a/recover?{API}")[1]


def test_paging_follows_the_cursor_and_the_next_link_keeps_the_api_version(tmp_path: Path) -> None:
    service = _service(tmp_path, page=2)
    for name in ("c", "a", "b"):
        _send(service, "PUT", f"/secrets/{name}?{API}", {"value": name})
    status, first = _send(service, "GET", f"/secrets?{API}")
    assert [item["id"] for item in first["value"]] == [f"{VAULT_URL}/secrets/a", f"{VAULT_URL}/secrets/b"]
    next_link = str(first["nextLink"])
    assert parse_qs(urlsplit(next_link).query)["api-version"] == ["7.6"]
    status, second = _send(service, "GET", next_link.removeprefix(VAULT_URL))
    assert (status, [item["id"] for item in second["value"]], second["nextLink"]) == (
        200,
        [f"{VAULT_URL}/secrets/c"],
        None,
    )


def test_a_bug_answers_500_with_a_request_id_not_a_dropped_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _service(tmp_path)

    def broken(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(service.store, "find", broken)
    response = service.handle("GET", "/secrets/a", API, "Bearer good", b"")
    assert (response.status, response.body["error"]["code"]) == (500, "InternalServerError")
    assert "x-ms-request-id" in response.headers
    assert service.stats.snapshot()["operations"] == {"get": 1}
