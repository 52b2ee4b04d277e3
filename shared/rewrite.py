"""Rewrite absolute URLs that point at the provider's base to the gateway's facade base.

Works on the JSON bytes, not on a parsed tree: only string values that *begin* with the exact
provider base, followed by `/`, `?`, `#` or the end of the string, are rewritten. That catches
Bundle `link[].url`, `entry[].fullUrl`, absolute references and `Location` values, and never a
longer host or path that merely shares a prefix (`.../fhir2`, `...:80801`), nor a URL in the
middle of narrative text. JSON's optional `\\/` escaping of slashes is handled. Working on bytes
keeps large search Bundles cheap: no Python object per node.
"""

from __future__ import annotations

import io
import re
from functools import lru_cache


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


def rewrite_body(body: bytes, provider_base: str, gateway_base: str) -> bytes:
    """The pieces go straight into one buffer (`re.sub` also holds a list of every slice: three
    copies of a large Bundle at its peak); a body without the provider's base is returned as is."""
    replacement = b'"' + gateway_base.encode()
    out, view, last = io.BytesIO(), memoryview(body), 0
    for match in _pattern(provider_base.rstrip("/")).finditer(body):
        out.write(view[last:match.start()])
        out.write(replacement)
        last = match.end()
    if not last:
        return body
    out.write(view[last:])
    return out.getvalue()


def rewrite_url(url: str, provider_base: str, gateway_base: str) -> str:
    """Same rule for a header value such as Location or Content-Location."""
    base = provider_base.rstrip("/")
    if url == base or url.startswith((base + "/", base + "?", base + "#")):
        return gateway_base + url[len(base):]
    return url


class StreamRewriter:
    """`rewrite_body` over a body that arrives in chunks, with byte-identical output.

    A base URL may be split across a chunk boundary, so the last `_hold` bytes of each chunk wait
    for the next one: no match can be longer than that, its look-ahead included. One byte before the
    held tail stays as context (not output again) for the pattern's look-behind. Memory is one chunk
    plus `_hold`, whatever the body's size.
    """

    def __init__(self, provider_base: str, gateway_base: str) -> None:
        base = provider_base.rstrip("/")
        self._pattern = _pattern(base)
        self._replacement = b'"' + gateway_base.encode()
        self._hold = 1 + len(base.replace("/", "\\/").encode()) + 2  # quote + longest spelling + `\/`
        self._carry = b""
        self._context = 0  # bytes at the start of _carry that were already written out

    def feed(self, chunk: bytes) -> bytes:
        """Rewritten output that is final; the rest is held until more arrives or `close`."""
        buf = self._carry + chunk if self._carry else chunk
        safe = len(buf) - self._hold
        out, last = [], self._context
        for match in self._pattern.finditer(buf, self._context):
            if match.start() >= safe:
                break
            out += (buf[last:match.start()], self._replacement)
            last = match.end()
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
        buf, start = self._carry, self._context
        self._carry, self._context = b"", 0
        out, last = [], start
        for match in self._pattern.finditer(buf, start):
            out += (buf[last:match.start()], self._replacement)
            last = match.end()
        out.append(buf[last:])
        return b"".join(out)
