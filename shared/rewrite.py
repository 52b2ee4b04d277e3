"""Rewrite absolute URLs that point at the provider's base to the gateway's facade base.

Works on the JSON bytes, not on a parsed tree: only string values that *begin* with the exact
provider base, followed by `/`, `?`, `#` or the end of the string, are rewritten. That catches
Bundle `link[].url`, `entry[].fullUrl`, absolute references and `Location` values, and never a
longer host or path that merely shares a prefix (`.../fhir2`, `...:80801`), nor a URL in the
middle of narrative text. JSON's optional `\\/` escaping of slashes is handled. Working on bytes
keeps large search Bundles cheap: no Python object per node.

Page links (issue #13): with a `sign_page` callable, a string that is exactly the provider base, an
optional `/`, then `?query` (HAPI's `<base>?_getpages=...`: a system-level request the gateway accepts
only as a link it handed out) gets its query replaced by `sign_page(query)`. The query is read as
the JSON string it is (any escape: `\\/`, `\\u0026`, ...) up to the closing quote, at most
`MAX_PAGE_QUERY_BYTES` raw bytes. A link the rewriter cannot sign (longer, not valid JSON string
text, a fragment, or refused by `sign_page`, which answers None) keeps its query as the provider
wrote it: following it then answers 400, so an unsigned link fails closed rather than open.
Type-level links (`<base>/Patient?...`) are ordinary searches, checked by policy when followed,
and are never signed.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from functools import lru_cache

# HAPI's page ids are a UUID and an offset (~60 bytes); 4 KiB bounds the streaming hold-back.
MAX_PAGE_QUERY_BYTES = 4096
# After the base: an optional `/` (either spelling), then the `?` of a system-level query.
_PAGE_START = re.compile(rb"(?:/|\\/)?\?")
# The rest of a JSON string: anything but a quote or backslash, or an escape, then the closing quote.
_STRING_REST = re.compile(rb'(?:[^"\\]|\\[\s\S])*+"')

PageSigner = Callable[[str], str | None]


@lru_cache(maxsize=256)
def _pattern(provider_base: str) -> re.Pattern[bytes]:
    """The pattern starts with literal bytes (the quote and what precedes the first `/`, the same in
    both spellings), so the regex engine skips ahead with a fast literal search; a leading
    look-behind made it try every byte, 13 times slower. The look-behind (no backslash before the
    quote) now follows the literal."""
    plain = provider_base.encode()
    cut = plain.find(b"/") if b"/" in plain else len(plain)
    head, tail = re.escape(plain[:cut]), plain[cut:]
    return re.compile(rb'"' + head + rb'(?<!\\"' + head + rb")(?:" + re.escape(tail) + rb"|"
                      + re.escape(tail.replace(b"/", b"\\/")) + rb')(?=[/?#"]|\\/)')


def rewrite_body(body: bytes, provider_base: str, gateway_base: str, sign_page: PageSigner | None = None) -> bytes:
    """The pieces go straight into one buffer (`re.sub` also holds a list of every slice: three
    copies of a large Bundle at its peak); a body without the provider's base is returned as is."""
    edit = _Edit(provider_base, gateway_base, sign_page)
    out, view, last = io.BytesIO(), memoryview(body), 0
    for match in edit.pattern.finditer(body):
        replacement, end = edit.replace(body, match)
        out.write(view[last:match.start()])
        out.write(replacement)
        last = end
    if not last:
        return body
    out.write(view[last:])
    return out.getvalue()


class _Edit:
    """What one match becomes: the gateway base, and for a page link its signed query too. Shared by
    `rewrite_body` and `StreamRewriter`, so both decide every match from the same bytes."""

    def __init__(self, provider_base: str, gateway_base: str, sign_page: PageSigner | None) -> None:
        base = provider_base.rstrip("/")
        self.pattern = _pattern(base)
        self.replacement = b'"' + gateway_base.encode()
        self.sign_page = sign_page
        # The most bytes from a match's start that decide it: quote, longest spelling of the base,
        # then `\/` (look-ahead or the page link's slash); a page link adds `?`, its query window and
        # the closing quote.
        self.reach = 1 + len(base.replace("/", "\\/").encode()) + 2
        if sign_page is not None:
            self.reach += 1 + MAX_PAGE_QUERY_BYTES + 1

    def replace(self, buf: bytes, match: re.Match[bytes]) -> tuple[bytes, int]:
        """The bytes that replace `buf[match.start():end]`, and `end`. A page link is replaced up to,
        not including, its closing quote, which no other match can start at: it may begin the next
        match, exactly as when the base alone is replaced."""
        if self.sign_page is not None and (page := _PAGE_START.match(buf, match.end())):
            rest = _STRING_REST.match(buf, page.end(), page.end() + MAX_PAGE_QUERY_BYTES + 1)
            signed = _signed(buf[page.end():rest.end() - 1], self.sign_page) if rest else None
            if rest and signed:
                return self.replacement + buf[match.end():page.end()] + signed, rest.end() - 1
        return self.replacement, match.end()


def _signed(raw: bytes, sign_page: PageSigner) -> bytes | None:
    """The signed query as JSON string text, or None to leave the link as the provider wrote it."""
    try:
        query = json.loads((b'"' + raw + b'"').decode())
    except ValueError:  # not JSON string text: a control character, a bad escape, not UTF-8
        return None
    signed = sign_page(query) if query and "#" not in query else None
    return json.dumps(signed)[1:-1].encode() if signed else None


def rewrite_url(url: str, provider_base: str, gateway_base: str) -> str:
    """Same rule for a header value such as Location or Content-Location."""
    base = provider_base.rstrip("/")
    if url == base or url.startswith((base + "/", base + "?", base + "#")):
        return gateway_base + url[len(base):]
    return url


class StreamRewriter:
    """`rewrite_body` over a body that arrives in chunks, with byte-identical output.

    A base URL (or a whole page link, when signing) may be split across a chunk boundary, so the last
    `_hold` bytes of each chunk wait for the next one: no match is decided by more bytes than that
    (`_Edit.reach`, about 4 KiB when signing page links). One byte before the held tail stays as
    context (not output again) for the pattern's look-behind. Memory is one chunk plus `_hold`,
    whatever the body's size.
    """

    def __init__(self, provider_base: str, gateway_base: str, sign_page: PageSigner | None = None) -> None:
        self._edit = _Edit(provider_base, gateway_base, sign_page)
        self._hold = self._edit.reach
        self._carry = b""
        self._context = 0  # bytes at the start of _carry that were already written out

    def feed(self, chunk: bytes) -> bytes:
        """Rewritten output that is final; the rest is held until more arrives or `close`."""
        buf = self._carry + chunk if self._carry else chunk
        safe = len(buf) - self._hold
        out, last = self._rewrite(buf, safe)
        cut = max(last, safe)
        if cut > last:
            out.append(buf[last:cut])
        if cut <= self._context:  # too little to decide anything yet
            self._carry = buf
            return b"".join(out)
        self._carry, self._context = buf[cut - 1:], 1
        return b"".join(out)

    def close(self) -> bytes:
        """Everything still held, rewritten: the body has ended, so no match can grow any more."""
        buf = self._carry
        out, last = self._rewrite(buf, len(buf))
        self._carry, self._context = b"", 0
        out.append(buf[last:])
        return b"".join(out)

    def _rewrite(self, buf: bytes, stop: int) -> tuple[list[bytes], int]:
        """Output for the matches that start before `stop` (each has `_hold` bytes after it, or the
        body has ended), and where the unwritten rest of `buf` begins."""
        out: list[bytes] = []
        last = self._context
        for match in self._edit.pattern.finditer(buf, self._context):
            if match.start() >= stop:
                break
            replacement, end = self._edit.replace(buf, match)
            out += (buf[last:match.start()], replacement)
            last = end
        return out, last
