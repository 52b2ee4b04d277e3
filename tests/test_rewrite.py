"""URL rewriting in response bodies: the fast pattern (literal prefix first) and the buffer-writing
`rewrite_body` must rewrite exactly what the plain rule says, on any bytes."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from shared.rewrite import rewrite_body

PROVIDERS = ("http://127.0.0.1:8080/fhir", "https://ehr.example.org/fhir/r3", "http://h", "https://x.y/a.b(c)+")
GATEWAY = "https://gw.example/api/fhir/stu3"


def reference(body: bytes, provider: str, gateway: str) -> bytes:
    """The rule as first written: a quote not escaped by a backslash, the base in either spelling, then
    `/`, `?`, `#`, `\\/` or the closing quote."""
    plain, escaped = re.escape(provider.encode()), re.escape(provider.replace("/", "\\/").encode())
    pattern = re.compile(rb'(?<!\\)"(?:' + plain + rb"|" + escaped + rb')(?=[/?#"]|\\/)')
    return pattern.sub(lambda _: b'"' + gateway.encode(), body)


def pieces(provider: str) -> st.SearchStrategy[bytes]:
    near = [f'"{provider}', '"' + provider.replace("/", "\\/"), f'"{provider[:5]}', f'"{provider}2']
    atoms = [*near, "/", "?", "#", '"', "\\", "\\/", '\\"', "x", " ", "{", "}"]
    return st.lists(st.sampled_from(atoms), max_size=14).map(lambda parts: "".join(parts).encode())


@given(st.data())
def test_rewrite_body_matches_the_plain_rule(data: st.DataObject) -> None:
    provider = data.draw(st.sampled_from(PROVIDERS))
    body = data.draw(pieces(provider))
    assert rewrite_body(body, provider, GATEWAY) == reference(body, provider, GATEWAY)


def test_a_body_without_the_base_comes_back_as_is() -> None:
    body = b'{"resourceType":"Patient","id":"1"}'
    assert rewrite_body(body, PROVIDERS[0], GATEWAY) is body
