"""gatewayctl: the operator's command line over the gateway's management API (ROUTE-2 by hand).

Not deployed (`.funcignore`): it runs on an operator's machine and talks HTTP to
`<gateway>/api/manage` with a function key, like any other management client.
"""
