"""URL rewriting in response bodies: the fast pattern (literal prefix first) and the buffer-writing
`rewrite_body` must rewrite exactly what the plain rule says, on any bytes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rewrite import MAX_PAGE_QUERY_BYTES, StreamRewriter, rewrite_body

pytestmark = pytest.mark.unit  # starts no process: part of the fast tier (scripts/test -m unit)

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


# --- streaming: the same output, whatever the chunking (issue #12) -------------------------------

SAMPLE_BUNDLES = sorted((Path(__file__).resolve().parents[2] / "shared" / "data" / "stu3-smart").glob("patient-*.json"))
SAMPLE_BASE = "http://127.0.0.1:8080/fhir"


def streamed(body: bytes, cuts: list[int], provider: str, gateway: str) -> bytes:
    rewriter, out, last = StreamRewriter(provider, gateway), [], 0
    for cut in sorted(set(cuts)):
        out.append(rewriter.feed(body[last:cut]))
        last = cut
    out.append(rewriter.feed(body[last:]))
    return b"".join(out) + rewriter.close()


def with_absolute_references(path: Path) -> bytes:
    """A real sample Bundle whose references and fullUrls point at the provider, as a server writes them."""
    body = path.read_bytes()
    for prefix in (b'"Patient/', b'"Practitioner/', b'"Encounter/', b'"Organization/'):
        body = body.replace(prefix, b"\"" + SAMPLE_BASE.encode() + b"/" + prefix[1:])
    return body.replace(b'"urn:uuid:', b'"' + SAMPLE_BASE.replace("/", "\\/").encode() + b'\\/Basic\\/')


# Only the samples that name the provider once written as a server would (a document Bundle of
# relative `/Binary/...` URLs has nothing to rewrite, and the property below would prove nothing).
REWRITTEN_SAMPLES = [path for path in SAMPLE_BUNDLES if with_absolute_references(path) != path.read_bytes()]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_streamed_sample_bundles_are_byte_identical_to_the_buffered_rewrite(data: st.DataObject) -> None:
    body = with_absolute_references(data.draw(st.sampled_from(REWRITTEN_SAMPLES)))
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    expected = rewrite_body(body, SAMPLE_BASE, GATEWAY)
    assert expected != body
    assert streamed(body, cuts, SAMPLE_BASE, GATEWAY) == expected


@given(st.data())
def test_streamed_rewrite_matches_the_plain_rule_at_every_split(data: st.DataObject) -> None:
    provider = data.draw(st.sampled_from(PROVIDERS))
    body = data.draw(pieces(provider))
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    assert streamed(body, cuts, provider, GATEWAY) == reference(body, provider, GATEWAY)


def test_streamed_rewrite_splits_a_base_url_byte_by_byte() -> None:
    body = b'{"url":"' + SAMPLE_BASE.encode() + b'/Patient/1","x":"' + SAMPLE_BASE.encode() + b'"}'
    assert streamed(body, list(range(len(body))), SAMPLE_BASE, GATEWAY) == rewrite_body(body, SAMPLE_BASE, GATEWAY)


# --- page links signed on the way out (issue #13) ------------------------------------------------

def fake_signer(query: str) -> str | None:
    """Stands in for `PageLinks.sign`: marks the decoded query; refuses one, as a malformed query is."""
    return None if "refuse" in query else "signed=" + query.replace("&", ",").replace("/", "~")


def page_pieces(provider: str) -> st.SearchStrategy[bytes]:
    """Bodies around page links: both spellings of the base, `\\/` and `\\u0026` escapes, `\\"`, a
    fragment, a query the signer refuses, an unterminated string and queries past the 4 KiB window."""
    escaped = provider.replace("/", "\\/")
    near = [f'"{provider}?', f'"{escaped}?', f'"{provider}/?', f'"{escaped}\\/?', f'"{provider}/Patient?',
            f'"{provider}', f'"{provider}#']
    query = ["_getpages=abc", "&", "\\u0026", "_getpagesoffset=10", "\\/", "\\\\", '\\"', "#f", "refuse", "é",
             "\\ud800", "x" * 2000, '"', ",", " ", "{", "}"]
    atoms = st.one_of(st.sampled_from(near), st.sampled_from(query))
    return st.lists(atoms, max_size=16).map(lambda parts: "".join(parts).encode())


def streamed_signed(body: bytes, cuts: list[int], provider: str) -> bytes:
    rewriter, out, last = StreamRewriter(provider, GATEWAY, fake_signer), [], 0
    for cut in sorted(set(cuts)):
        out.append(rewriter.feed(body[last:cut]))
        last = cut
    out.append(rewriter.feed(body[last:]))
    return b"".join(out) + rewriter.close()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_streamed_page_link_signing_is_byte_identical_to_the_whole_body_at_every_split(data: st.DataObject) -> None:
    provider = data.draw(st.sampled_from(PROVIDERS))
    body = data.draw(page_pieces(provider))
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    assert streamed_signed(body, cuts, provider) == rewrite_body(body, provider, GATEWAY, fake_signer)


@given(st.data())
def test_signing_changes_nothing_but_the_queries_of_page_links(data: st.DataObject) -> None:
    """Without a page link in it, a body is rewritten exactly as without signing."""
    provider = data.draw(st.sampled_from(PROVIDERS))
    body = data.draw(pieces(provider)).replace(b"?", b"")
    assert rewrite_body(body, provider, GATEWAY, fake_signer) == reference(body, provider, GATEWAY)


def test_a_page_link_is_signed_in_either_spelling_and_with_json_escapes() -> None:
    base, escaped = SAMPLE_BASE, SAMPLE_BASE.replace("/", "\\/")
    body = (f'{{"link":[{{"relation":"next","url":"{base}?_getpages=a\\/b\\u0026_getpagesoffset=10"}},'
            f'{{"relation":"last","url":"{escaped}\\/?_getpages=c"}},'
            f'{{"relation":"self","url":"{base}/Patient?name=x"}}]}}').encode()
    assert json.loads(rewrite_body(body, base, GATEWAY, fake_signer))["link"] == [
        {"relation": "next", "url": f"{GATEWAY}?signed=_getpages=a~b,_getpagesoffset=10"},
        {"relation": "last", "url": f"{GATEWAY}/?signed=_getpages=c"},
        {"relation": "self", "url": f"{GATEWAY}/Patient?name=x"}]


def test_a_page_link_that_cannot_be_signed_keeps_its_query_and_so_fails_closed() -> None:
    long_query = "_getpages=" + "x" * MAX_PAGE_QUERY_BYTES
    for query in ("_getpages=refuse", "_getpages=a#frag", long_query, "", "_getpages=a\\x"):
        body = f'{{"url":"{SAMPLE_BASE}?{query}"}}'.encode()
        expected = f'{{"url":"{GATEWAY}?{query}"}}'.encode()
        assert rewrite_body(body, SAMPLE_BASE, GATEWAY, fake_signer) == expected, query
        assert streamed_signed(body, list(range(0, len(body), 7)), SAMPLE_BASE) == expected, query


def test_a_page_link_split_byte_by_byte_is_still_signed() -> None:
    body = b'{"url":"' + SAMPLE_BASE.encode() + b'?_getpages=abc\\u0026_getpagesoffset=10","x":1}'
    signed = streamed_signed(body, list(range(len(body))), SAMPLE_BASE)
    assert signed == rewrite_body(body, SAMPLE_BASE, GATEWAY, fake_signer)
    assert json.loads(signed)["url"] == f"{GATEWAY}?signed=_getpages=abc,_getpagesoffset=10"
