"""escnc: a VNF/VM lifecycle manager with a NETCONF/YANG northbound and a libvirt southbound."""

__version__ = "0.1.0"
