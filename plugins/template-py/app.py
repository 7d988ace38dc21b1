# Template destination in Python — `canopy plugin new --lang python` starts a project from
# this file; change it into your platform's mapping.
#
# POSTs the canonical event, as JSON, to the URL in the `url` setting, with an optional
# bearer token and an optional HMAC signature of the body. It uses every part of the SDK a
# real destination needs: the settings form, config validation, a skip, secret references,
# host-side signing, and response interpretation.

from canopy_plugin_sdk import (
    Config,
    Event,
    Info,
    Needs,
    Request,
    Setting,
    config_error,
    default_verdict,
    destination,
    display_name,
    email,
    event_json,
    invalid_config,
    skip,
)

URL = "url"
TOKEN = "token"
SIGNING_SECRET = "signing_secret"

SETTINGS = [
    Setting.url(URL, "Endpoint URL")
    .required()
    .describe("Where events are POSTed, e.g. https://hooks.example.com/loyalty"),
    Setting.boolean("require_email", "Only customers with an email")
    .describe("Skip events about anonymous customers")
    .default_value(False),
    Setting.secret(TOKEN, "Bearer token").describe("Sent as `Authorization: Bearer <token>`"),
    Setting.secret(SIGNING_SECRET, "Signing secret").describe(
        "Signs the body as `X-Signature: <hex HMAC-SHA256>`"
    ),
]


@destination
class Plugin:
    def describe(self):
        return Info(
            id="template-py",
            name="Template (Python)",
            version="0.1.0",
            description="POSTs the canonical event as JSON to a URL",
            events=["*"],
            allowed_hosts=[f"settings:{URL}"],
            settings=SETTINGS,
            # The component carries CPython (about 18 MB): more than the host's default 16 MiB.
            needs=Needs(component_mib=32),
        )

    def validate_config(self, config: Config):
        errors = config.missing_required(SETTINGS)
        url = config.text(URL)
        if url is not None and not (url.startswith("https://") or url.startswith("http://")):
            errors.append(config_error(URL, "Endpoint URL must start with https:// or http://"))
        return errors

    def transform(self, event: Event, config: Config):
        url = config.text(URL)
        if url is None:
            invalid_config("Endpoint URL is required")
        if config.flag("require_email") and email(event) is None:
            skip("the customer has no email")
        request = (
            Request.post(url)
            .header("Content-Type", "application/json")
            .header("X-Event-Type", event.event)
            .header("X-Event-Name", display_name(event.event))
            .json(event_json(event))
        )
        if config.has_secret(TOKEN):
            request.secret_header("Authorization", "Bearer ", TOKEN)
        if config.has_secret(SIGNING_SECRET):
            request.sign_hmac_hex("X-Signature", SIGNING_SECRET)
        return [request]

    def interpret(self, response):
        return default_verdict(response)
