"""The canonical loyalty event as plugins receive it (SPEC.md section 2).

The catalogue mirrors the Rust one in `crates/events` and the TypeScript SDK's `events.ts`;
events are parsed exactly as strictly, with the same messages. Numbers are kept as sent
(`jsontext`), which the TypeScript SDK cannot do: an integer of any size stays exact, and
`10.0` is written back as `10.0`, as the Rust SDK writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .jsontext import Json, parse_json, to_json

#: The 19 canonical event types, in the order of the product documentation.
EVENT_TYPES: tuple[str, ...] = (
    "seeds.earned.order",
    "seeds.earned.visit",
    "seeds.earned.review",
    "seeds.earned.referral",
    "seeds.earned.social_share",
    "seeds.earned.bonus",
    "tier.changed",
    "review.submitted",
    "review.approved",
    "review.rejected",
    "gift_card.earned",
    "gift_card.claimed",
    "store_credit.earned",
    "store_credit.claimed",
    "eco_product.awarded",
    "eco.tree_planted",
    "referral.generated",
    "referral.visit",
    "referral.successful",
)

DISPLAY_NAMES: dict[str, str] = {
    "seeds.earned.order": "Seeds Earned Order",
    "seeds.earned.visit": "Seeds Earned Visit",
    "seeds.earned.review": "Seeds Earned Review",
    "seeds.earned.referral": "Seeds Earned Referral",
    "seeds.earned.social_share": "Seeds Earned Social Share",
    "seeds.earned.bonus": "Seeds Earned Bonus",
    "tier.changed": "Tier Changed",
    "review.submitted": "Review Submitted",
    "review.approved": "Review Approved",
    "review.rejected": "Review Rejected",
    "gift_card.earned": "Gift Card Earned",
    "gift_card.claimed": "Gift Card Claimed",
    "store_credit.earned": "Store Credit Earned",
    "store_credit.claimed": "Store Credit Claimed",
    "eco_product.awarded": "Eco Product Awarded",
    "eco.tree_planted": "Eco Tree Planted",
    "referral.generated": "Referral Generated",
    "referral.visit": "Referral Visit",
    "referral.successful": "Referral Successful",
}


def display_name(event_type: str) -> str:
    """The human name platforms show, e.g. `Seeds Earned Order`; `KeyError` for an unknown type."""
    return DISPLAY_NAMES[event_type]


def is_event_type(key: object) -> bool:
    """Whether `key` is one of the canonical event types."""
    return isinstance(key, str) and key in DISPLAY_NAMES


# What JavaScript's String.prototype.trim removes (white space and line terminators), so that
# "blank" means the same in every SDK.
_WHITESPACE = (
    "\u0009\u000a\u000b\u000c\u000d\u0020\u00a0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def trim(text: str) -> str:
    """`text` without leading and trailing white space, as the TypeScript SDK trims."""
    return text.strip(_WHITESPACE)


@dataclass
class Customer:
    """The customer an event is about. `email` is absent for anonymous customers.

    `shopify_customer_id` is kept as text: Shopify ids exceed what JSON numbers carry safely in
    every client. Fields this version does not know are kept in `extra`, in the order sent
    (nulls included)."""

    email: Optional[str] = None
    first_name: Optional[str] = None
    last_name: Optional[str] = None
    display_name: Optional[str] = None
    shopify_customer_id: Optional[str] = None
    extra: dict[str, Json] = field(default_factory=dict)

    def to_json_value(self) -> dict[str, Json]:
        """The customer as the loyalty backend sent it: the known fields first (those set),
        then the others."""
        out: dict[str, Json] = {}
        for key in CUSTOMER_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key, value in self.extra.items():
            out[key] = value
        return out


@dataclass(kw_only=True)
class Event:
    """A canonical event: the envelope, and the event's own fields (amount, tier, ...)."""

    #: UUID; assigned by the host when the sender leaves it out.
    id: Optional[str] = None
    #: One of `EVENT_TYPES`.
    event: str
    #: RFC 3339 in UTC, as sent.
    timestamp: str
    customer: Customer = field(default_factory=Customer)
    #: The event's own fields, in the order they were sent.
    fields: dict[str, Json] = field(default_factory=dict)

    def to_json_value(self) -> dict[str, Json]:
        return event_json(self)


_ENVELOPE = frozenset(("id", "event", "timestamp", "customer"))

#: The customer's known fields, in the order the Rust SDK writes them, before any other.
CUSTOMER_FIELDS: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "display_name",
    "shopify_customer_id",
)


def parse_event(text: str) -> Event:
    """Parses the event text the host passes to `transform`. Raises `ValueError` naming what
    is wrong; the SDK turns it into an `invalid-event` refusal."""
    try:
        raw = parse_json(text)
    except ValueError as error:
        raise ValueError(f"the event is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError("the event is not a JSON object")
    kind = raw.get("event")
    if not is_event_type(kind):
        raise ValueError(f"unknown event type {to_json(kind)}")
    timestamp = raw.get("timestamp")
    if not isinstance(timestamp, str):
        raise ValueError("timestamp must be a string")
    event_id = raw.get("id")
    if event_id is not None and not isinstance(event_id, str):
        raise ValueError("id must be a string")
    fields = {key: value for key, value in raw.items() if key not in _ENVELOPE}
    return Event(
        id=event_id,
        event=kind,
        timestamp=timestamp,
        customer=_parse_customer(raw["customer"] if "customer" in raw else _ABSENT),
        fields=fields,
    )


_ABSENT: Any = object()


def _parse_customer(value: Any) -> Customer:
    customer = Customer()
    if value is _ABSENT:
        return customer
    if not isinstance(value, dict):
        raise ValueError("customer must be an object")
    for key in CUSTOMER_FIELDS:
        known = value.get(key)
        if known is None:
            continue
        if key == "shopify_customer_id" and _is_number(known):
            # Kept as text, as the Rust SDK does: exactly as sent.
            setattr(customer, key, to_json(known))
        elif isinstance(known, str):
            setattr(customer, key, known)
        else:
            raise ValueError(f"customer.{key} must be a string")
    customer.extra = {key: item for key, item in value.items() if key not in CUSTOMER_FIELDS}
    return customer


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def email(event: Event) -> Optional[str]:
    """The customer's email, when there is a non-blank one."""
    value = event.customer.email
    return value if isinstance(value, str) and trim(value) != "" else None


def event_json(event: Event) -> dict[str, Json]:
    """The event as the loyalty backend sent it: envelope first, then the event's own fields
    (what a destination that forwards the whole event puts in its body)."""
    out: dict[str, Json] = {}
    if event.id is not None:
        out["id"] = event.id
    out["event"] = event.event
    out["timestamp"] = event.timestamp
    out["customer"] = event.customer.to_json_value()
    out.update(event.fields)
    return out


#: Request headers that frame or route a request, or belong to one hop of it: the HTTP layer
#: sets them, so neither a plugin nor an integration's settings may; the host refuses a
#: request naming one. Compare case-insensitively (`is_reserved_header`).
RESERVED_HEADERS: tuple[str, ...] = (
    "Connection",
    "Content-Length",
    "Expect",
    "Host",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
)

_RESERVED_LOWER = frozenset(name.lower() for name in RESERVED_HEADERS)


def is_reserved_header(name: str) -> bool:
    """Whether a header name is one of the `RESERVED_HEADERS`."""
    return trim(name).lower() in _RESERVED_LOWER


_QUERY_OR_FRAGMENT = re.compile(r"[?#]")


def dot_segment(url: str) -> Optional[str]:
    """The first dot segment (`.`, `..`, or a percent-encoded form) in the path of a URL as
    written, if any: URL parsing removes them, so such a request would go to another path than
    the one written. The host refuses it; a plugin should refuse the event first."""
    scheme = url.find("://")
    rest = _QUERY_OR_FRAGMENT.split(url[scheme + 3 :] if scheme >= 0 else url)[0]
    slash = rest.find("/")
    path = rest[slash:] if slash >= 0 else ""
    for segment in path.split("/")[1:]:
        decoded = segment.lower().replace("%2e", ".")
        if decoded in (".", ".."):
            return segment
    return None
