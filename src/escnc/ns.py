"""XML namespaces used across escnc."""

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
NOTIF = "urn:ietf:params:xml:ns:netconf:notification:1.0"
# RFC 5277 nc-notifications (netconf/streams)
NC_NOTIFICATIONS = "urn:ietf:params:xml:ns:netmod:notification"
ESC = "http://www.cisco.com/esc/esc"
MONITORING = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
YANG_LIBRARY = "urn:ietf:params:xml:ns:yang:ietf-yang-library"
WITH_DEFAULTS = "urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults"
NC_NOTIF_BASE = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"  # RFC 6470
NETCONF_YANG = "urn:ietf:params:xml:ns:yang:ietf-netconf"

BASE_10 = "urn:ietf:params:netconf:base:1.0"
BASE_11 = "urn:ietf:params:netconf:base:1.1"


def qn(ns: str, name: str) -> str:
    """Clark notation ``{ns}name`` as lxml uses it."""
    return f"{{{ns}}}{name}"
