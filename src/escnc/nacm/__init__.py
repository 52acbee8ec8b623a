"""RFC 8341 NACM: rules compiled from running's /nacm and the decisions every
northbound asks for (see engine.py). Imports only datastore.schema and lxml."""

from escnc.nacm.config import NACM_NS, NACM_TAG, BadRule, NacmConfig
from escnc.nacm.engine import AccessDenied, Nacm, Principal

__all__ = ["NACM_NS", "NACM_TAG", "AccessDenied", "BadRule", "Nacm", "NacmConfig", "Principal"]
