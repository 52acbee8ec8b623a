"""The capabilities a server announces, whatever the northbound asks for them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from escnc.ns import BASE_10, BASE_11

if TYPE_CHECKING:
    from escnc.services import Services


def server_capabilities(services: Services) -> list[str]:
    caps = [BASE_10, BASE_11, *services.capabilities]
    module_caps = getattr(services.schema, "module_capabilities", None)
    if module_caps is not None:
        caps.extend(module_caps())
    # keep order, drop duplicates
    return list(dict.fromkeys(c.strip() for c in caps if c and c.strip()))
