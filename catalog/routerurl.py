"""Which URLs a router may have.

The portal calls routers server-side with their operator secret, so a router URL is a way to
make the server send requests: only http(s), and never to link-local addresses or the cloud
metadata services that live there (169.254.169.254 hands out cloud credentials). Private
addresses stay allowed: routers live there. A router URL is checked where one is entered (the
admin's forms through Router.clean, and apply_config); the probe and the router client do
not follow redirects, so an allowed URL cannot bounce the request elsewhere.

Names are checked as written, not resolved: a name that resolves to a link-local address
(DNS rebinding) is outside what this check sees (SECURITY.md, known gaps).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

# Cloud metadata services by name (GCP, AWS, Azure, Alibaba, Oracle, Tencent, Equinix).
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.oraclecloud.com",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
# Metadata services outside the link-local ranges: AWS's IPv6 endpoint and Alibaba's.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
# What the C resolver accepts as IPv4 besides dotted quads: 2852039166, 0xa9fea9fe, 0251.0376...
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


def router_url_problem(url: str) -> str | None:
    """Why `url` cannot be a router's base URL, or None when it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// URLs are allowed"
    if parts.username is not None or parts.password is not None:
        return "no credentials in the URL (the router key is a separate field)"
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "the URL names no host"
    if host in METADATA_NAMES:
        return "cloud metadata services are not routers"
    address = _as_address(host)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local or address in METADATA_ADDRESSES:
        return "link-local and cloud metadata addresses are not allowed"
    if address.is_unspecified or address.is_multicast:
        return "not an address a router can have"
    return None


def _as_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None
