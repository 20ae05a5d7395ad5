"""NetworkSet (workers/domain/networks.py) answers exactly what a scan of `address in network` would."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from workers.domain.networks import IpNetwork, NetworkSet


def _networks(version: int) -> st.SearchStrategy[IpNetwork]:
    bits = 32 if version == 4 else 128
    kind = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return st.builds(
        lambda value, prefix: kind((value, prefix), strict=False),
        st.integers(0, 2**bits - 1),
        st.integers(0, bits),
    )


def _near(networks: list[IpNetwork]) -> st.SearchStrategy[int]:
    """Addresses at the edges of the networks (first, last, one outside) as well as anywhere."""
    edges = [int(n.network_address) + delta for n in networks for delta in (-1, 0)]
    edges += [int(n.broadcast_address) + delta for n in networks for delta in (0, 1)]
    return st.sampled_from(edges) if edges else st.just(0)


@given(st.data(), st.sampled_from([4, 6]))
def test_membership_equals_a_scan_of_every_network(data: st.DataObject, version: int) -> None:
    networks = data.draw(st.lists(_networks(version), max_size=12))
    bits = 32 if version == 4 else 128
    candidates = data.draw(st.lists(st.one_of(st.integers(0, 2**bits - 1), _near(networks)), min_size=1))
    blocked = NetworkSet.of(networks)
    assert len(blocked) == len(networks)
    for value in candidates:
        if not 0 <= value < 2**bits:
            continue
        address = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
        assert (address in blocked) == any(address in network for network in networks)


def test_an_address_of_the_other_version_is_never_in_the_set() -> None:
    blocked = NetworkSet.of([ipaddress.ip_network("0.0.0.0/0")])
    assert ipaddress.ip_address("10.1.2.3") in blocked
    assert ipaddress.ip_address("::a01:203") not in blocked
    assert "10.1.2.3" not in blocked  # only addresses, never their text
    assert not NetworkSet.of([]) and ipaddress.ip_address("10.1.2.3") not in NetworkSet()
