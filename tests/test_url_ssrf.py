"""`check_url` refuses every IPv6 literal that embeds a non-global IPv4 address (issue 23).

A gateway (a NAT64 translator, a 6to4 or Teredo relay, an ISATAP router, an old dual stack)
delivers such an address to the IPv4 address inside it, so each is as dangerous as the IPv4 one:
`64:ff9b::169.254.169.254` is the metadata service behind any NAT64. No network: the literals
resolve locally.
"""

from __future__ import annotations

import pytest

from model_code import url_fetch

REFUSED = [
    ("nat64-loopback", "64:ff9b::7f00:1"),  # 64:ff9b::127.0.0.1
    ("nat64-metadata", "64:ff9b::a9fe:a9fe"),  # 64:ff9b::169.254.169.254
    ("nat64-private", "64:ff9b::a00:1"),
    ("nat64-local-use", "64:ff9b:1::a00:1"),  # RFC 8215 local-use prefix
    ("nat64-local-use-public", "64:ff9b:1:808:8:800::"),  # refused whatever it embeds
    ("ipv4-compatible-loopback", "::127.0.0.1"),
    ("ipv4-compatible-private", "::10.0.0.1"),
    ("ipv4-mapped-loopback", "::ffff:127.0.0.1"),
    ("ipv4-translated-loopback", "::ffff:0:127.0.0.1"),  # RFC 2765
    ("6to4-loopback", "2002:7f00:1::1"),
    ("6to4-private", "2002:a00:1::1"),
    ("teredo-private-client", "2001:0:4136:e378:8000:63bf:f5ff:fffe"),  # client 10.0.0.1
    ("isatap-private", "2001:4860::5efe:a00:1"),  # ISATAP interface id, 10.0.0.1
    ("isatap-universal-private", "2001:4860::200:5efe:c0a8:101"),  # 192.168.1.1
]


@pytest.mark.parametrize("address", [a for _, a in REFUSED], ids=[n for n, _ in REFUSED])
def test_ipv6_forms_embedding_a_private_ipv4_address_are_refused(address: str) -> None:
    with pytest.raises(url_fetch.FetchError, match="not globally routable") as caught:
        url_fetch.check_url(f"https://[{address}]/dog.jpg")
    assert caught.value.status_code == 400
    assert "DOGOPS_ALLOWED_URL_HOSTS" in str(caught.value)  # the fix, named


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1",
                                     "2001:4860:4860::8888", "2606:4700:4700::1111"])
def test_ipv6_forms_of_public_addresses_still_pass(address: str) -> None:
    """An IPv6-only network reaches public IPv4 hosts through NAT64: those stay allowed."""
    assert url_fetch.check_url(f"https://[{address}]/dog.jpg")[3] == address


def test_a_listed_host_skips_the_address_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOGOPS_ALLOWED_URL_HOSTS", "64:ff9b::a00:1")
    assert url_fetch.check_url("https://[64:ff9b::a00:1]/dog.jpg")[3] == "64:ff9b::a00:1"
