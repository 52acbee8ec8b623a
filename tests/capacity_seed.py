"""The request and response examples of seed 003 (OPNFV Promise northbound interface,
ETSI NFV IFA 005), copied as the seed shows them. Two seed typos are corrected and
marked: the network query response's ``networkReserved`` lacks its braces, the compute
update response's startTime reads ``2015-09-14TT16:00:00Z``."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

COMPUTE_SUBSCRIBE: Json = {
    "zoneId": "12345",
    "resourceDescriptor": [{"computeResourceTypeId": "vcInstances"}],
    "threshold": [{"capacity_info": "available", "condition": "lt", "value": 5}],
}
COMPUTE_SUBSCRIBE_RESPONSE: Json = {
    "created": "2015-09-21T00:00:00Z",
    "capacityChangeSubscriptionId": "abcdef-ghijkl-123456789",
}
COMPUTE_QUERY: Json = {
    "zoneId": "12345",
    "resourceDescriptor": {"computeResourceTypeId": "vcInstances"},
    "timePeriod": {"startTime": "2015-09-21T00:00:00Z", "stopTime": "2015-09-21T00:05:30Z"},
}
COMPUTE_QUERY_RESPONSE: Json = {
    "zoneId": "12345",
    "lastUpdate": "2015-09-21T00:03:20Z",
    "capacityInformation": {"available": 4, "reserved": 17, "total": 50, "allocated": 29},
}
COMPUTE_NOTIFICATION: Json = {
    "zoneId": "12345",
    "notificationId": "zyxwvu-tsrqpo-987654321",
    "capacityChangeTime": "2015-09-21T00:03:20Z",
    "resourceDescriptor": {"computeResourceTypeId": "vcInstances"},
    "capacityInformation": {"available": 4, "reserved": 17, "total": 50, "allocated": 29},
}
COMPUTE_CREATE_POOL: Json = {
    "startTime": "2015-09-21T01:00:00Z",
    "computePoolReservation": {"numCpuCores": 20, "numVcInstances": 5, "virtualMemSize": 10},
}
COMPUTE_CREATE_POOL_RESPONSE: Json = {
    "reservationData": {
        "startTime": "2015-09-21T01:00:00Z",
        "reservationStatus": "initialized",
        "reservationId": "xxxx-yyyy-zzzz",
        "computePoolReserved": {
            "numCpuCores": 20,
            "numVcInstances": 5,
            "virtualMemSize": 10,
            "zoneId": "23456",
        },
    }
}
CONTAINER_FLAVOR: Json = {
    "flavorId": "myFlavor",
    "virtualCpu": {"numVirtualCpu": 2, "cpuArchitecture": "x86"},
    "virtualMemory": {"numaEnabled": "False", "virtualMemSize": 16},
    "virtualStorage": {"typeOfStorage": "volume", "sizeOfStorage": 16},
}
COMPUTE_CREATE_CONTAINERS: Json = {
    "startTime": "2015-10-05T15:00:00Z",
    "virtualizationContainerReservation": [
        {"containerId": "myContainer", "containerFlavor": CONTAINER_FLAVOR}
    ],
}
COMPUTE_CREATE_CONTAINERS_RESPONSE: Json = {
    "reservationData": {
        "startTime": "2015-10-05T15:00:00Z",
        "reservationId": "aaaa-bbbb-cccc",
        "reservationStatus": "initialized",
        "virtualizationContainerReserved": [
            {"containerId": "myContainer", "containerFlavor": CONTAINER_FLAVOR}
        ],
    }
}
COMPUTE_QUERY_RESERVATION: Json = {"queryReservationFilter": [{"reservationId": "xxxx-yyyy-zzzz"}]}
COMPUTE_QUERY_RESERVATION_RESPONSE: Json = {
    "reservationData": {
        "startTime": "2015-09-21T01:00:00Z",
        "reservationStatus": "active",
        "reservationId": "xxxx-yyyy-zzzz",
        "computePoolReserved": {
            "numCpuCores": 20,
            "numVcInstances": 5,
            "virtualMemSize": 10,
            "zoneId": "23456",
        },
    }
}
COMPUTE_UPDATE: Json = {"startTime": "2015-09-14T16:00:00Z", "reservationId": "xxxx-yyyy-zzzz"}
COMPUTE_UPDATE_RESPONSE: Json = {
    "reservationData": {
        "startTime": "2015-09-14T16:00:00Z",  # seed: 2015-09-14TT16:00:00Z
        "reservationStatus": "active",
        "reservationId": "xxxx-yyyy-zzzz",
        "computePoolReserved": {
            "numCpuCores": 20,
            "numVcInstances": 5,
            "virtualMemSize": 10,
            "zoneId": "23456",
        },
    }
}

NETWORK_SUBSCRIBE: Json = {
    "resourceDescriptor": [{"networkResourceTypeId": "publicIps"}],
    "threshold": [{"capacity_info": "available", "condition": "lt", "value": 5}],
}
NETWORK_SUBSCRIBE_RESPONSE: Json = {
    "created": "2015-09-28T00:00:00Z",
    "capacityChangeSubscriptionId": "bcdefg-hijklm-234567890",
}
NETWORK_QUERY: Json = {
    "resourceDescriptor": {"networkResourceTypeId": "publicIps"},
    "timePeriod": {"startTime": "2015-09-28T00:00:00Z", "stopTime": "2015-09-28T00:05:30Z"},
}
NETWORK_QUERY_RESPONSE: Json = {
    "lastUpdate": "2015-09-28T00:02:10Z",
    "capacityInformation": {"available": 4, "reserved": 10, "total": 64, "allocated": 50},
}
NETWORK_NOTIFICATION: Json = {
    "notificationId": "yxwvut-srqpon-876543210",
    "capacityChangeTime": "2015-09-28T00:02:10Z",
    "resourceDescriptor": {"networkResourceTypeId": "publicIps"},
    "capacityInformation": {"available": 4, "reserved": 10, "total": 64, "allocated": 50},
}
NETWORK_CREATE: Json = {
    "startTime": "2015-09-28T01:00:00Z",
    "networkReservation": {"numPublicIps": 2},
}
NETWORK_RESERVATION: Json = {
    "reservationData": {
        "startTime": "2015-09-28T01:00:00Z",
        "reservationStatus": "initialized",
        "reservationId": "wwww-xxxx-yyyy",
        "networkReserved": {"publicIps": ["10.2.91.60", "10.2.91.61"]},
    }
}
NETWORK_QUERY_RESERVATION: Json = {"queryReservationFilter": [{"reservationId": "wwww-xxxx-yyyy"}]}
NETWORK_UPDATE: Json = {"startTime": "2015-09-21T16:00:00Z", "reservationId": "wwww-xxxx-yyyy"}

STORAGE_SUBSCRIBE: Json = {
    "resourceDescriptor": [{"storageResourceTypeId": "volumes"}],
    "threshold": [{"capacity_info": "available", "condition": "lt", "value": 3}],
}
STORAGE_SUBSCRIBE_RESPONSE: Json = {
    "created": "2015-09-28T12:00:00Z",
    "capacityChangeSubscriptionId": "cdefgh-ijklmn-345678901",
}
STORAGE_QUERY: Json = {
    "resourceDescriptor": {"storageResourceTypeId": "volumes"},
    "timePeriod": {"startTime": "2015-09-28T12:00:00Z", "stopTime": "2015-09-28T12:04:45Z"},
}
STORAGE_QUERY_RESPONSE: Json = {
    "lastUpdate": "2015-09-28T12:01:35Z",
    "capacityInformation": {"available": 2, "reserved": 4, "total": 10, "allocated": 4},
}
STORAGE_NOTIFICATION: Json = {
    "notificationId": "xwvuts-rqponm-765432109",
    "capacityChangeTime": "2015-09-28T12:01:35Z",
    "resourceDescriptor": {"storageResourceTypeId": "volumes"},
    "capacityInformation": {"available": 2, "reserved": 4, "total": 10, "allocated": 4},
}
STORAGE_CREATE: Json = {
    "startTime": "2015-09-28T13:00:00Z",
    "storagePoolReservation": {"storageSize": 10, "numSnapshots": 3, "numVolumes": 2},
}
STORAGE_RESERVATION: Json = {
    "reservationData": {
        "startTime": "2015-09-28T13:00:00Z",
        "reservationStatus": "initialized",
        "reservationId": "vvvv-wwww-xxxx",
        "storagePoolReserved": {"storageSize": 10, "numSnapshots": 3, "numVolumes": 2},
    }
}
STORAGE_QUERY_RESERVATION: Json = {"queryReservationFilter": [{"reservationId": "vvvv-wwww-xxxx"}]}
STORAGE_UPDATE: Json = {"startTime": "2015-09-20T23:00:00Z", "reservationId": "vvvv-wwww-xxxx"}

# the seed's zone and the settings that make its examples meaningful: zone 12345 is
# both test hosts; the public range holds the seed's addresses
ZONE = "12345"
PUBLIC_RANGE = "10.2.91.60-10.2.91.79"

# fields escnc adds to the seed's responses (where the reservation is held)
EXTRA_FIELDS = {"zoneId", "stopTime"}


def shape(value: Any) -> Any:
    """The keys of a JSON value, recursively; a list is the shape of its first item,
    so that a list of one and an object compare alike (XML cannot tell them apart)."""
    if isinstance(value, list):
        return shape(value[0]) if value else []
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return "leaf"


def same_shape(seed: Any, got: Any, where: str = "") -> list[str]:
    """Differences between the seed's shape and ``got``'s (extras escnc adds aside)."""
    a, b = shape(seed), shape(got)
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [] if (a == "leaf") == (b == "leaf") else [f"{where}: {a} vs {b}"]
    out = [f"{where}/{k} missing" for k in a if k not in b]
    out += [f"{where}/{k} unexpected" for k in b if k not in a and k not in EXTRA_FIELDS]
    for k in a:
        if k in b:
            out += same_shape(seed_item(seed, k), seed_item(got, k), f"{where}/{k}")
    return out


def seed_item(value: Any, key: str) -> Any:
    if isinstance(value, list):
        value = value[0] if value else {}
    return value.get(key) if isinstance(value, dict) else None
