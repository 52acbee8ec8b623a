"""The HTTP northbound: ESC's REST API (/ESCManager/v0), health, metrics, OpenAPI.

Starlette on uvicorn, inside ``escnc serve`` when ``http_listen``/``https_listen`` is
set. Every request is authenticated (HTTP Basic, the SSH user store) and runs its
operation through ``escnc.rpc`` -- the path a NETCONF request takes (same YANG
validation, same NACM). See docs/http.md.
"""
