"""Canopy's plugin SDK for Python: what the Rust SDK (`plugins/sdk`) gives Rust plugins and the
TypeScript one (`plugins/sdk-ts`) TypeScript plugins, under the same names in snake_case.

A destination is a class with `describe`, `validate_config`, `transform` and (optionally)
`interpret`, taking typed inputs: a parsed `Event` and the integration's `Config`. The
`destination` decorator adapts it to the contract's export, the `Plugin` class componentize-py
looks for in the app module:

    from canopy_plugin_sdk import Info, Request, destination

    @destination
    class Plugin:
        def describe(self): return Info(id='acme', ...)
        def validate_config(self, config): return []
        def transform(self, event, config): return [Request.post(...).json(...)]

`python -m canopy_plugin_sdk.build app dist/acme.wasm` builds the component against the
contract this SDK was written for (`canopy:destination@0.2.0`, in the package's `wit/`).

The contract's own records (`ConfigError`, `IncomingResponse`, `OutgoingRequest`,
`PluginInfo`, `SettingSpec`, `Verdict` and its cases `Verdict_Delivered`, `Verdict_Retry`,
`Verdict_Failed`, ...) are importable from here too; they are the classes componentize-py
generates from the WIT (`wit_world.imports.types`).
"""

from typing import Any

from .events import (
    CUSTOMER_FIELDS,
    DISPLAY_NAMES,
    EVENT_TYPES,
    RESERVED_HEADERS,
    Customer,
    Event,
    display_name,
    dot_segment,
    email,
    event_json,
    is_event_type,
    is_reserved_header,
    parse_event,
    trim,
)
from .jsontext import Json, JsonFloat, parse_json, to_json
from .plugin import (
    REASON_EXCERPT_CHARS,
    Config,
    Info,
    Needs,
    RateLimit,
    Refused,
    Request,
    Setting,
    body_text,
    config_error,
    default_verdict,
    delivered,
    destination,
    error_details,
    failed,
    header,
    invalid_config,
    invalid_event,
    log,
    number,
    platform_verdict,
    plugin_info,
    retry,
    retry_after_seconds,
    skip,
)

#: The contract version this SDK builds plugins for.
CONTRACT_VERSION = "0.2.0"

__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    # The contract's generated records, on first use (see the module's documentation).
    if name[:1].isupper():
        from .plugin import _contract

        types = _contract()
        if hasattr(types, name):
            return getattr(types, name)
    raise AttributeError(f"module 'canopy_plugin_sdk' has no attribute {name!r}")


__all__ = [
    "CONTRACT_VERSION",
    "CUSTOMER_FIELDS",
    "DISPLAY_NAMES",
    "EVENT_TYPES",
    "REASON_EXCERPT_CHARS",
    "RESERVED_HEADERS",
    "Config",
    "Customer",
    "Event",
    "Info",
    "Json",
    "JsonFloat",
    "Needs",
    "RateLimit",
    "Refused",
    "Request",
    "Setting",
    "body_text",
    "config_error",
    "default_verdict",
    "delivered",
    "destination",
    "display_name",
    "dot_segment",
    "email",
    "error_details",
    "event_json",
    "failed",
    "header",
    "invalid_config",
    "invalid_event",
    "is_event_type",
    "is_reserved_header",
    "log",
    "number",
    "parse_event",
    "parse_json",
    "platform_verdict",
    "plugin_info",
    "retry",
    "retry_after_seconds",
    "skip",
    "to_json",
    "trim",
]
