"""validate (:validate:1.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree

from escnc.ns import NC
from escnc.operations._common import checked, source_config

if TYPE_CHECKING:
    from escnc.rpc.dispatch import RpcContext, RpcRegistry
    from escnc.services import Services

CAPABILITY = "urn:ietf:params:netconf:capability:validate:1.1"


def register(registry: RpcRegistry, services: Services) -> None:
    registry.register(NC, "validate", checked(validate))
    if CAPABILITY not in services.capabilities:
        services.capabilities.append(CAPABILITY)


def validate(ctx: RpcContext, request: etree._Element) -> None:
    ctx.services.datastore.validate(source_config(request))
