# Slack destination, in Python: each loyalty event becomes one message in a Slack channel,
# posted with the Web API's `chat.postMessage` as the integration's Slack app (bot token).
#
# The message is one human line per event type, with the customer's name (and, when the
# integration allows it, their email) and the event's figures, in Slack's mrkdwn; every text
# that comes from the event is escaped (`&`, `<`, `>`) and clipped. Slack answers HTTP 200
# with `{"ok": false, "error": "..."}` when it refuses a message, so `interpret` reads the
# body, not just the status.

from datetime import datetime

from canopy_plugin_sdk import (
    Config,
    Event,
    Info,
    JsonFloat,
    Needs,
    RateLimit,
    Request,
    Setting,
    body_text,
    config_error,
    delivered,
    destination,
    display_name,
    failed,
    invalid_config,
    parse_json,
    platform_verdict,
    retry,
    retry_after_seconds,
    trim,
)

API = "https://slack.com/api/chat.postMessage"

CHANNEL = "channel"
BOT_TOKEN = "bot_token"
INCLUDE_EMAIL = "include_email"

SETTINGS = [
    Setting.secret(BOT_TOKEN, "Bot token")
    .required()
    .describe("The Slack app's Bot User OAuth Token (xoxb-…), with the chat:write scope"),
    Setting.text(CHANNEL, "Channel")
    .required()
    .describe("A channel ID (C0123456789, in the channel's details) or name (#loyalty); invite the app to it"),
    Setting.boolean(INCLUDE_EMAIL, "Show customer emails")
    .describe("Add the customer's email to their name in messages (off: names only)")
    .default_value(False),
]

# Longest text taken from an event into a message (a section block holds 3,000 characters).
CLIP_CHARS = 200

# Slack errors that pass: wait and send again (`Retry-After` when Slack gives one).
TRANSIENT = {
    "ratelimited",
    "rate_limited",
    "message_limit_exceeded",
    "request_timeout",
    "service_unavailable",
    "internal_error",
    "fatal_error",
    "team_added_to_org",
}

# Slack errors that name a problem with the token.
CREDENTIALS = {
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "not_allowed_token_type",
    "no_permission",
    "org_login_required",
    "two_factor_setup_required",
    "team_access_not_granted",
    "ekm_access_denied",
    "access_denied",
}

# What an admin should do about the commonest refusals.
HINTS = {
    "missing_scope": "the bot token needs the chat:write scope",
    "channel_not_found": "check the channel ID or name; invite the app to a private channel",
    "not_in_channel": "invite the app to the channel (/invite @your-app)",
    "is_archived": "the channel is archived",
    "restricted_action": "the workspace does not let the app post in this channel",
    "restricted_action_read_only_channel": "the channel is read-only",
    "msg_too_long": "the message is too long",
    "no_text": "the message is empty",
}


# ---------------------------------------------------------------------------------------
# Text


def escape(text: str) -> str:
    """Text as Slack's mrkdwn shows it literally: `&`, `<` and `>` escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str) -> str:
    return text if len(text) <= CLIP_CHARS else text[: CLIP_CHARS - 1] + "…"


def shown(value: object) -> "str | None":
    """A field's value as message text: numbers with thousands separators (or as sent, when
    not whole), text trimmed, clipped and escaped; `None` for anything else or blank."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, JsonFloat):
        return escape(value.text)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        text = trim(value)
        return escape(clip(text)) if text else None
    return None


def count(value: object, one: str, many: str) -> "str | None":
    """`1 seed`, `350 seeds`."""
    figure = shown(value)
    if figure is None:
        return None
    return f"{figure} {one if figure == '1' else many}"


def money(fields: dict, amount: str = "amount", currency: str = "currency") -> "str | None":
    figure = shown(fields.get(amount))
    if figure is None:
        return None
    unit = shown(fields.get(currency))
    return f"{figure} {unit}" if unit else figure


def person(value: object, include_email: bool, start: bool, possessive: bool = False) -> str:
    """A customer (the event's, or one nested in it) as a message names them: their name, with
    their email when the settings allow it (not in the possessive: `*Jane Smith*'s`)."""
    info = value if isinstance(value, dict) else {}

    def text(key: str) -> "str | None":
        field = info.get(key)
        return trim(field) if isinstance(field, str) and trim(field) else None

    suffix = "'s" if possessive else ""
    name = text("display_name") or " ".join(t for t in (text("first_name"), text("last_name")) if t) or None
    email = text("email") if include_email else None
    if name is not None:
        label = f"*{escape(clip(name))}*{suffix}"
        return f"{label} ({escape(clip(email))})" if email and not possessive else label
    if email is not None:
        return f"*{escape(clip(email))}*{suffix}"
    customer_id = info.get("shopify_customer_id")
    if isinstance(customer_id, (str, int)) and not isinstance(customer_id, bool) and trim(str(customer_id)):
        return f"{'Customer' if start else 'customer'} {escape(clip(trim(str(customer_id))))}{suffix}"
    return ("A customer" if start else "a customer") + suffix


def review_of(fields: dict) -> str:
    """`4-star review of Bamboo Toothbrush Set`, with what the event has of it."""
    rating = fields.get("rating")
    stars = f"{rating}-star " if isinstance(rating, int) and not isinstance(rating, bool) else ""
    product = fields.get("product")
    title = shown(product.get("title")) if isinstance(product, dict) else None
    return f"{stars}review" + (f" of {title}" if title else "")


def plus_seeds(fields: dict, key: str = "seeds_awarded") -> str:
    seeds = count(fields.get(key), "seed", "seeds")
    return f" (+{seeds})" if seeds else ""


def balance(fields: dict) -> str:
    seeds = count(fields.get("balance"), "seed", "seeds")
    tier = shown(fields.get("tier"))
    if seeds and tier:
        return f". Balance: {seeds} ({tier})"
    if seeds:
        return f". Balance: {seeds}"
    return f". Tier: {tier}" if tier else ""


# ---------------------------------------------------------------------------------------
# One line per event type


def message(event: Event, include_email: bool) -> str:
    f = event.fields
    customer = event.customer.to_json_value()
    who = person(customer, include_email, start=True)
    whose = person(customer, include_email, start=True, possessive=True)
    seeds = count(f.get("amount"), "seed", "seeds") or "seeds"
    kind = event.event

    if kind == "seeds.earned.order":
        number = shown(f.get("order_number")) or shown(f.get("order_id"))
        total = money(f, "order_total", "order_currency")
        order = f"order #{number}" if number else "an order"
        return f":seedling: {who} earned {seeds} for {order}" + (f" ({total})" if total else "") + balance(f)
    if kind == "seeds.earned.visit":
        visit = shown(f.get("visit_number"))
        return f":seedling: {who} earned {seeds} for " + (f"visit #{visit}" if visit else "a visit") + balance(f)
    if kind == "seeds.earned.review":
        return f":seedling: {who} earned {seeds} for a {review_of(f)}" + balance(f)
    if kind == "seeds.earned.referral":
        referred = f.get("referred_customer")
        whom = person(referred, include_email, start=False) if isinstance(referred, dict) else None
        return f":seedling: {who} earned {seeds} for " + (f"referring {whom}" if whom else "a referral") + balance(f)
    if kind == "seeds.earned.social_share":
        platform = shown(f.get("platform"))
        return f":seedling: {who} earned {seeds} for " + (f"sharing on {platform}" if platform else "a share") + balance(f)
    if kind == "seeds.earned.bonus":
        reason = shown(f.get("reason"))
        return f":seedling: {who} earned {seeds} as a bonus" + (f" ({reason})" if reason else "") + balance(f)
    if kind == "tier.changed":
        old, new = shown(f.get("old_tier")), shown(f.get("new_tier"))
        total = count(f.get("total_seeds"), "seed", "seeds")
        change = f"moved from {old} to {new}" if old and new else f"reached {new}" if new else "changed tier"
        return f":trophy: {who} {change}" + (f" ({total})" if total else "")
    if kind == "review.submitted":
        title = shown(f.get("title"))
        photos = f.get("photos")
        n = len(photos) if isinstance(photos, list) else 0
        pictures = count(n, "photo", "photos") if n else ("photos" if f.get("has_photo") is True else None)
        return (
            f":memo: {who} submitted a {review_of(f)}"
            + (f": “{title}”" if title else "")
            + (f" ({pictures})" if pictures else "")
        )
    if kind == "review.approved":
        return f":white_check_mark: {whose} {review_of(f)} was approved" + plus_seeds(f)
    if kind == "review.rejected":
        reason = shown(f.get("rejection_reason"))
        return f":no_entry_sign: {whose} {review_of(f)} was rejected" + (f": {reason}" if reason else "")
    if kind == "gift_card.earned":
        value = money(f)
        spent = count(f.get("seeds_redeemed"), "seed", "seeds")
        card = f"a {value} gift card" if value else "a gift card"
        return f":gift: {who} " + (f"redeemed {spent} for {card}" if spent else f"earned {card}")
    if kind == "gift_card.claimed":
        # The card's code is left out: whoever reads it can spend the card.
        value = money(f)
        return f":gift: {who} claimed " + (f"a {value} gift card" if value else "a gift card")
    if kind == "store_credit.earned":
        value = money(f)
        spent = count(f.get("seeds_redeemed"), "seed", "seeds")
        credit = f"{value} of store credit" if value else "store credit"
        return f":moneybag: {who} " + (f"redeemed {spent} for {credit}" if spent else f"earned {credit}")
    if kind == "store_credit.claimed":
        value = money(f)
        return f":moneybag: {who} claimed " + (f"{value} of store credit" if value else "store credit")
    if kind == "eco_product.awarded":
        product = shown(f.get("eco_product_name"))
        product_type = shown(f.get("eco_product_type"))
        spent = count(f.get("seeds_spent"), "seed", "seeds")
        what = (product or "an eco product") + (f" ({product_type})" if product_type and product else "")
        return f":herb: {who} " + (f"spent {spent} on {what}" if spent else f"was awarded {what}")
    if kind == "eco.tree_planted":
        trees = count(f.get("trees_count"), "tree", "trees") or "trees"
        project = shown(f.get("project_name"))
        certificate = shown(f.get("certificate_url"))
        return (
            f":evergreen_tree: {who} planted {trees}"
            + (f" with {project}" if project else "")
            + (f". Certificate: {certificate}" if certificate else "")
        )
    if kind == "referral.generated":
        code = shown(f.get("referral_code"))
        link = shown(f.get("share_url"))
        return f":link: {who} created " + (f"referral code {code}" if code else "a referral link") + (f" ({link})" if link else "")
    if kind == "referral.visit":
        return f":wave: A visitor arrived through {person(customer, include_email, start=False, possessive=True)} referral link" + plus_seeds(f)
    # referral.successful
    referred = f.get("referred_customer")
    whom = person(referred, include_email, start=False) if isinstance(referred, dict) else "a new customer"
    total = shown(f.get("order_total"))
    return f":tada: {who} referred {whom}, who placed " + (f"an order of {total}" if total else "an order") + plus_seeds(f)


def when(timestamp: str) -> str:
    """The event's time as Slack shows it in each reader's time zone, the text as sent when it
    cannot be read."""
    text = escape(clip(timestamp))
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        seconds = int(moment.timestamp()) if moment.tzinfo is not None else None
    except (ValueError, OverflowError):
        seconds = None
    if seconds is None:
        return text
    return f"<!date^{seconds}^{{date_short_pretty}} at {{time}}|{text}>"


# ---------------------------------------------------------------------------------------
# The destination


@destination
class Plugin:
    def describe(self):
        return Info(
            id="slack",
            name="Slack",
            version="0.1.0",
            description="Posts each loyalty event as a message in a Slack channel",
            events=["*"],
            allowed_hosts=["slack.com"],
            settings=SETTINGS,
            # chat.postMessage: about one message per second per channel.
            rate_limit=RateLimit(requests=1, per_seconds=1),
            # The component carries CPython (about 18 MB): more than the host's default 16 MiB.
            needs=Needs(component_mib=32),
        )

    def validate_config(self, config: Config):
        errors = config.missing_required(SETTINGS)
        channel = config.text(CHANNEL)
        if channel is not None and (any(c.isspace() for c in channel) or channel == "#"):
            errors.append(
                config_error(CHANNEL, "Channel must be a channel ID such as C0123456789 or a name such as #loyalty")
            )
        return errors

    def transform(self, event: Event, config: Config):
        if not config.has_secret(BOT_TOKEN):
            invalid_config("Bot token is required")
        channel = config.text(CHANNEL)
        if channel is None:
            invalid_config("Channel is required")
        line = message(event, config.flag(INCLUDE_EMAIL))
        context = f"{display_name(event.event)} · {when(event.timestamp)}"
        return [
            Request.post(API)
            .secret_header("Authorization", "Bearer ", BOT_TOKEN)
            .header("Content-Type", "application/json; charset=utf-8")
            .json(
                {
                    "channel": channel,
                    "text": line,
                    "blocks": [
                        # verbatim: Slack does not turn `@here`, channel names or URLs in
                        # the event's text into mentions or links.
                        {"type": "section", "text": {"type": "mrkdwn", "text": line, "verbatim": True}},
                        {
                            "type": "context",
                            "elements": [{"type": "mrkdwn", "text": context, "verbatim": True}],
                        },
                    ],
                    "unfurl_links": False,
                    "unfurl_media": False,
                }
            )
        ]

    def interpret(self, response):
        if not 200 <= response.status <= 299:
            # 429 (ratelimited) and 5xx are retried, after `Retry-After` when Slack gives one.
            return platform_verdict(response, "Slack", "Slack refused the bot token (check it and its chat:write scope)")
        try:
            answer = parse_json(body_text(response))
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            excerpt = trim(body_text(response))[:100]
            return failed(f"Slack's answer is not the Web API's (HTTP {response.status}): {excerpt}")
        if answer["ok"]:
            return delivered()
        error = answer.get("error") if isinstance(answer.get("error"), str) else "unknown_error"
        if error in TRANSIENT:
            return retry(f"Slack answered {error}", retry_after_seconds(response))
        if error in CREDENTIALS:
            return failed(f"Slack refused the bot token: {error} (check it, and reinstall the app if it was revoked)")
        hint = HINTS.get(error)
        return failed(f"Slack refused the message: {error}" + (f" ({hint})" if hint else ""))
