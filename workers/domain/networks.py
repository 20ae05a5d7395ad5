"""A set of IP networks answering "is this address in any of them?" in time independent of the set's size.

A blocklist may hold up to the rules file's limit of networks; a linear scan of `address in network` over 100,000
of them cost 11 ms per address that matched none — on every payment with an IP address. Here the networks are
kept as their prefixes, an integer per network, grouped by version and prefix length: a lookup shifts the address
once per distinct prefix length present (at most 33 for IPv4, 129 for IPv6; a few in practice) and asks a
frozenset. Plain Python, no I/O (docs/risk.md, "What it costs per call").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class NetworkSet:
    # (version, prefix length) -> the networks' prefixes as integers (their address >> host bits).
    _prefixes: dict[tuple[int, int], frozenset[int]] = field(default_factory=dict)
    _count: int = 0

    @classmethod
    def of(cls, networks: Iterable[IpNetwork]) -> NetworkSet:
        grouped: dict[tuple[int, int], set[int]] = {}
        count = 0
        for network in networks:
            host_bits = network.max_prefixlen - network.prefixlen
            grouped.setdefault((network.version, network.prefixlen), set()).add(
                int(network.network_address) >> host_bits
            )
            count += 1
        return cls({key: frozenset(values) for key, values in grouped.items()}, count)

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        value = int(address)
        for (version, prefix_length), prefixes in self._prefixes.items():
            if version == address.version and value >> (address.max_prefixlen - prefix_length) in prefixes:
                return True
        return False
