"""The grammar of every string in cluster.yaml that reaches a rendered file.

Each check takes the text and returns it (normalised where that is harmless) or raises
ValueError with one sentence saying what is allowed. They are pure, ASCII-only and
anchored at both ends (`\\Z`, never `$`, which also matches before a final newline),
so a value that passes cannot carry a newline, a quote or a control character into a
YAML document, a systemd unit or a shell line. spec.py applies them to the models'
fields; the renderers quote on top of that (defence in depth).
"""

from __future__ import annotations

import ipaddress
import re

# DNS (RFC 1123 host names, lowercase as Kubernetes wants them: a DNS-1123 subdomain).
DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_NAME_RE = re.compile(rf"{DNS_LABEL}(?:\.{DNS_LABEL})*\Z")
DNS_NAME_MAX = 253

# OCI image references, as the distribution project's reference grammar defines them:
#   reference  := name [ ":" tag ] [ "@" digest ]
#   name       := [ domain "/" ] path-component ( "/" path-component )*
#   domain     := domain-component ( "." domain-component )* [ ":" port ]
#   path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
#   tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
#   digest     := algorithm ":" hex (at least 32 hex digits)
# A first component counts as a domain when it holds a "." or a ":" or is "localhost".
_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]{{1,5}})?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REGISTRY_RE = re.compile(rf"{_DOMAIN}(?:/{_PATH_COMPONENT})*\Z")
IMAGE_REF_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?\Z"
)
IMAGE_NAME_MAX = 255

# http(s) URLs: scheme, host (DNS name, IPv4, or [IPv6]), optional port, a path of
# unreserved characters and percent escapes. No user info, query or fragment: nothing
# bakery renders needs them, and they are where quoting goes wrong.
_HOST = rf"(?:{DNS_LABEL}(?:\.{DNS_LABEL})*|\[[0-9A-Fa-f:.]+\])"
URL_RE = re.compile(rf"(?P<scheme>https?)://(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?(?P<path>(?:/[A-Za-z0-9._~%+,=@:-]*)*)\Z")

# Component flags: name without dashes; values are one line of printable text.
FLAG_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*\Z")
FLAG_VALUE_MAX = 4096

# Cloud names bakery passes through as they are.
ZONE_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
TOKEN_RE = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")
CIDR_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}/[0-9]{1,2}\Z")
IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}\Z")


def single_line(text: str) -> str:
    """Printable text on one line. Raises naming the first offending character."""
    for ch in text:
        if not ch.isprintable():
            raise ValueError(f"contains the control or unprintable character U+{ord(ch):04X}; only one line of printable text is allowed")
    return text


def dns_name(text: str, what: str = "DNS name") -> str:
    if not text.isascii():
        raise ValueError(f"{text!r} is not ASCII; write an internationalized {what} in its punycode form (xn--...)")
    if len(text) > DNS_NAME_MAX:
        raise ValueError(f"{what} is {len(text)} characters; at most {DNS_NAME_MAX}")
    if not DNS_NAME_RE.match(text):
        raise ValueError(f"{text!r} is not a valid {what}: dot-separated labels of lowercase letters, digits and '-' "
                         "(each 1-63 characters, not starting or ending with '-')")
    return text


def ipv4(text: str) -> str:
    if not IPV4_RE.match(text):
        raise ValueError(f"{text!r} is not an IPv4 address like 10.0.0.10")
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address (each part 0-255, no leading zeros)") from None


def cidr(text: str) -> str:
    """An IPv4 network in CIDR form with no host bits set: 10.0.1.0/24."""
    if ":" in text:
        raise ValueError(f"{text!r} is IPv6; bakery needs an IPv4 network here, like 10.0.1.0/24")
    if not CIDR_RE.match(text):
        raise ValueError(f"{text!r} is not an IPv4 network in CIDR form, like 10.0.1.0/24")
    address, prefix = text.split("/")
    if int(prefix) > 32:
        raise ValueError(f"{text!r}: the prefix length /{int(prefix)} is over /32")
    ipv4(address)
    net = ipaddress.IPv4Network(text, strict=False)
    if str(net.network_address) != address:
        raise ValueError(f"{text!r} has host bits set; the network is {net}")
    return str(net)


def url(text: str, what: str = "URL") -> str:
    """An http(s) URL without user info, query or fragment."""
    single_line(text)
    m = URL_RE.match(text) if text.isascii() else None
    if not m:
        raise ValueError(f"{text!r} is not an http(s) URL like https://host[:port]/path (no spaces, quotes, query or fragment)")
    if m["port"] is not None and not 1 <= int(m["port"]) <= 65535:
        raise ValueError(f"{text!r}: port {m['port']} is not 1-65535")
    return text


def _domain_port(text: str, domain: str) -> None:
    """A registry's port is a TCP port: 1-65535 (the grammar alone lets 99999 through)."""
    host, _, port = domain.partition(":")
    if port and not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port {port} of {host} is not a TCP port (1-65535)")


def registry(text: str) -> str:
    """A registry host[:port], optionally with a path prefix (registry.k8s.io, host:5000/team)."""
    if not REGISTRY_RE.match(text) or len(text) > IMAGE_NAME_MAX:
        raise ValueError(f"{text!r} is not a registry: host[:port] optionally followed by /path (lowercase path components), no scheme")
    _domain_port(text, text.split("/", 1)[0])
    return text


def image_ref(text: str) -> str:
    """An OCI image reference with a tag or a digest (pinned: never an implied :latest)."""
    m = IMAGE_REF_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an image reference: [registry[:port]/]path[:tag][@digest] "
                         "(lowercase path, no scheme, no spaces)")
    if len(m["name"]) > IMAGE_NAME_MAX:
        raise ValueError(f"image name is {len(m['name'])} characters; at most {IMAGE_NAME_MAX}")
    if not (m["tag"] or m["digest"]):
        raise ValueError(f"{text!r} has neither a tag nor a digest; pin one (name:tag or name@sha256:...)")
    first = m["name"].split("/", 1)[0]
    if "/" in m["name"] and ("." in first or ":" in first or first == "localhost"):
        _domain_port(text, first)
    return text


def flag_name(text: str) -> str:
    if text.startswith("-"):
        raise ValueError(f"{text!r}: write the flag name without leading dashes")
    if not FLAG_NAME_RE.match(text):
        raise ValueError(f"{text!r} is not a flag name: lowercase letters, digits and '-'")
    return text


def flag_value(text: str) -> str:
    single_line(text)
    if len(text) > FLAG_VALUE_MAX:
        raise ValueError(f"value is {len(text)} characters; at most {FLAG_VALUE_MAX}")
    return text


# -- what YAML made of a scalar ------------------------------------------------------
#
# PyYAML reads YAML 1.1: yes/no/on/off are booleans like true/false, a leading 0 makes an
# integer octal, 1:30 is base 60, and digits with a dot are a float. A spec that means a
# number writes a decimal number; one that means text quotes it. These say which rule read
# a value, for the one-line error.

YAML11_BOOLEANS = ("yes", "no", "on", "off")  # PyYAML's resolver; y and n stay strings
DECIMAL_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")


def yaml_reading(written: str | None, value: object) -> str:
    """`written` (as the file has it) and what YAML made of it: '`yes` is a boolean in YAML 1.1'."""
    shown = f"`{written}`" if written is not None else repr(value)
    if isinstance(value, bool):
        if written is not None and written.lower() in YAML11_BOOLEANS:
            return f"{shown} is a boolean in YAML 1.1 (yes/no and on/off are booleans, like true/false)"
        return f"{shown} is a boolean in YAML"
    if isinstance(value, float):
        return f"{shown} is a float in YAML (unquoted digits with a dot: {value!r})"
    if isinstance(value, int):
        return f"{shown} is an integer in YAML"
    if value is None:
        return f"{shown if written else 'an empty value'} is null in YAML"
    if isinstance(value, str):
        if written is not None and written[:1] in ("'", '"'):
            return f"{shown} is a string in YAML (it is quoted)"
        return f"{shown} is a string in YAML"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return shown


def yaml_int_form(written: str, value: int) -> str | None:
    """Why an integer written other than in plain decimal is refused, or None when it is plain."""
    text = written.strip()
    if DECIMAL_RE.match(text):
        return None
    bare = text.lstrip("+-")
    if ":" in bare:
        rule = "base 60 in YAML 1.1 (1:30 reads as 90)"
    elif bare[:2].lower() == "0x":
        rule = "hexadecimal in YAML"
    elif bare[:2].lower() == "0b":
        rule = "binary in YAML 1.1"
    elif bare[:2].lower() == "0o" or (bare.startswith("0") and len(bare) > 1):
        rule = "octal in YAML 1.1 (a leading 0)"
    elif "_" in bare:
        rule = "read with its underscores dropped in YAML 1.1"
    else:
        rule = "not a plain decimal number in YAML"
    return f"`{written}` is {rule}: it reads as {value}; write numbers in plain decimal, or quote a string"


# -- address ranges -------------------------------------------------------------------
#
# IANA's special-purpose IPv4 ranges (RFC 6890) that are not unicast host addresses on a
# network. Which of them a cloud refuses for a subnet is per cloud (spec.py).

THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
RESERVED = ipaddress.IPv4Network("240.0.0.0/4")
BROADCAST = ipaddress.IPv4Network("255.255.255.255/32")
SPECIAL_RANGES: dict[ipaddress.IPv4Network, str] = {
    THIS_NETWORK: "'this network' (RFC 1122: never a host's address)",
    LOOPBACK: "loopback (RFC 1122: it never leaves a host)",
    LINK_LOCAL: "link-local (RFC 3927: never routed; the clouds serve instance metadata, DNS and time there)",
    MULTICAST: "multicast (RFC 5771: a group address, never a host's)",
    BROADCAST: "the limited broadcast address (RFC 919)",
    RESERVED: "reserved for future use (RFC 1112, the former class E)",
}


def special_range(net: ipaddress.IPv4Network, refused: tuple[ipaddress.IPv4Network, ...], *, within: bool = False) -> str | None:
    """The first range of `refused` that `net` overlaps (or, with `within`, lies inside), named."""
    for special in refused:
        if (net.subnet_of(special) if within else net.overlaps(special)):
            return f"{special} {SPECIAL_RANGES.get(special, '')}".rstrip()
    return None


# -- file paths in component flags ------------------------------------------------------


def managed_path(text: str, roots: tuple[str, ...], files: tuple[str, ...]) -> bool:
    """Whether `text` is an absolute path, without '..' or '.', inside one of `roots`
    (folders, ending in '/') or one of `files`."""
    if not text.startswith("/") or "//" in text or any(part in (".", "..") for part in text.split("/")):
        return False
    return text in files or any(text.startswith(root) and len(text) > len(root) for root in roots)
