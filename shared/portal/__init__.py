"""The consumer registration portal (AUTH-5, AUTH-6): server-rendered pages served by the function app.

`handlers` holds the endpoints; `sessions` signs sessions and CSRF tokens; `web` the HTTP hardening
(security headers, cookies, origin checks); `pages` and `html` the escaped templates; `static/`
the one stylesheet and the small script for copy buttons.
"""
