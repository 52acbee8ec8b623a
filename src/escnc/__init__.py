"""escnc: a VNF/VM lifecycle manager with a NETCONF/YANG northbound and a libvirt southbound."""

__version__ = "0.1.0"

from escnc.lean_imports import defer_elementpath, defer_invoke

defer_elementpath()  # before yangson: it needs only the regex translator
defer_invoke()  # before paramiko: only its ssh_config "Match exec" uses invoke
