"""What the gateway tells services about an HTTP client, and how little of it we keep.

Services never store a full IP address: only the network part (an IPv4 /24 or an IPv6
/48), which is enough for abuse investigations and consent receipts and much less
identifying.
"""

from __future__ import annotations

import ipaddress

IPV4_PREFIX = 24
IPV6_PREFIX = 48


def truncate_ip(ip: str | None) -> str | None:
    """`203.0.113.77` -> `203.0.113.0/24`; None or garbage -> None."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
