"""URL rewriting in response bodies: the fast pattern (literal prefix first) and the buffer-writing
`rewrite_body` must rewrite exactly what the plain rule says, on any bytes."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rewrite import StreamRewriter, rewrite_body

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


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_streamed_sample_bundles_are_byte_identical_to_the_buffered_rewrite(data: st.DataObject) -> None:
    body = with_absolute_references(data.draw(st.sampled_from(SAMPLE_BUNDLES)))
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
