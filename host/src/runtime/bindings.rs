//! The host's `bindgen!`s: one module per contract version it speaks, the way Zed's
//! extension host keeps one per extension API version. Nothing outside `runtime` uses these
//! types.
//!
//! The newest version (`v0_2`) is the host's own: `types.rs` converts its types to the
//! host's. An older version is converted to the newest here, in one place, and nowhere else
//! knows it exists: [`Destination`] calls a plugin of any version and answers in the newest
//! version's types. A new contract version adds a module, a variant and its conversions.

use wasmtime::Store;

use super::host::InstanceState;

/// Contract 0.1: the first release.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "destination",
        path: "../wit/0.1",
    });
    pub use self::canopy::destination::types;
}

/// Contract 0.2: 0.1 plus `plugin-info.needs` and the `basic-auth` header segment.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "destination",
        path: "../wit/0.2",
    });
    pub use self::canopy::destination::types;
}

/// The newest contract's types: what the rest of the runtime converts from.
pub use v0_2::types;

/// The newest contract version this host speaks: what the SDKs build against.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// A contract version this host speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    V0_1,
    V0_2,
}

impl Contract {
    /// Every version this host speaks, newest first.
    pub const ALL: [Contract; 2] = [Contract::V0_2, Contract::V0_1];

    /// The WIT package version.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => CONTRACT_VERSION,
        }
    }

    /// The version this host would load a component built against `version` as, if any: a
    /// release (not a pre-release, which wasmtime never matches to another version) on one
    /// of the host's tracks — the same major, and before 1.0 the same minor — and not older
    /// than the host's release on that track. A newer patch or minor may add functions, which
    /// this host does not call; a component built against an older one would lack the
    /// functions this host added.
    pub fn for_version(version: &str) -> Option<Contract> {
        let theirs = semver::Version::parse(version).ok()?;
        if !theirs.pre.is_empty() {
            return None;
        }
        Contract::ALL.into_iter().find(|contract| {
            let host =
                semver::Version::parse(contract.version()).expect("contract versions are semver");
            theirs.major == host.major
                && (host.major > 0 || theirs.minor == host.minor)
                && theirs >= host
        })
    }
}

/// A checked component ready to instantiate, of whichever version it was built against.
#[derive(Clone)]
pub(crate) enum DestinationPre {
    V0_1(v0_1::DestinationPre<InstanceState>),
    V0_2(v0_2::DestinationPre<InstanceState>),
}

/// A plugin instance's exports.
pub(crate) enum Destination {
    V0_1(v0_1::Destination),
    V0_2(v0_2::Destination),
}

impl DestinationPre {
    pub(crate) fn new(
        contract: Contract,
        pre: wasmtime::component::InstancePre<InstanceState>,
    ) -> wasmtime::Result<DestinationPre> {
        Ok(match contract {
            Contract::V0_1 => DestinationPre::V0_1(v0_1::DestinationPre::new(pre)?),
            Contract::V0_2 => DestinationPre::V0_2(v0_2::DestinationPre::new(pre)?),
        })
    }

    pub(crate) fn instantiate(
        &self,
        store: &mut Store<InstanceState>,
    ) -> wasmtime::Result<Destination> {
        Ok(match self {
            DestinationPre::V0_1(pre) => Destination::V0_1(pre.instantiate(store)?),
            DestinationPre::V0_2(pre) => Destination::V0_2(pre.instantiate(store)?),
        })
    }
}

impl Destination {
    pub(crate) fn describe(
        &self,
        store: &mut Store<InstanceState>,
    ) -> wasmtime::Result<types::PluginInfo> {
        match self {
            Destination::V0_1(d) => Ok(d.canopy_destination_plugin().call_describe(store)?.into()),
            Destination::V0_2(d) => d.canopy_destination_plugin().call_describe(store),
        }
    }

    pub(crate) fn validate_config(
        &self,
        store: &mut Store<InstanceState>,
        config: &types::Config,
    ) -> wasmtime::Result<Vec<types::ConfigError>> {
        match self {
            Destination::V0_1(d) => Ok(d
                .canopy_destination_plugin()
                .call_validate_config(store, &old_config(config))?
                .into_iter()
                .map(|e| types::ConfigError {
                    field: e.field,
                    message: e.message,
                })
                .collect()),
            Destination::V0_2(d) => d
                .canopy_destination_plugin()
                .call_validate_config(store, config),
        }
    }

    pub(crate) fn transform(
        &self,
        store: &mut Store<InstanceState>,
        event: &str,
        config: &types::Config,
    ) -> wasmtime::Result<Result<Vec<types::OutgoingRequest>, types::Refusal>> {
        match self {
            Destination::V0_1(d) => Ok(d
                .canopy_destination_plugin()
                .call_transform(store, event, &old_config(config))?
                .map(|requests| requests.into_iter().map(Into::into).collect())
                .map_err(Into::into)),
            Destination::V0_2(d) => d
                .canopy_destination_plugin()
                .call_transform(store, event, config),
        }
    }

    pub(crate) fn interpret(
        &self,
        store: &mut Store<InstanceState>,
        response: &types::IncomingResponse,
    ) -> wasmtime::Result<types::Verdict> {
        match self {
            Destination::V0_1(d) => {
                let response = v0_1::types::IncomingResponse {
                    status: response.status,
                    headers: response.headers.clone(),
                    body: response.body.clone(),
                };
                Ok(d.canopy_destination_plugin()
                    .call_interpret(store, &response)?
                    .into())
            }
            Destination::V0_2(d) => d
                .canopy_destination_plugin()
                .call_interpret(store, response),
        }
    }
}

// ---- contract 0.1 → 0.2 ------------------------------------------------------------------

fn old_config(config: &types::Config) -> v0_1::types::Config {
    v0_1::types::Config {
        settings: config.settings.clone(),
        secrets_present: config.secrets_present.clone(),
    }
}

mod from_v0_1 {
    use super::types as new;
    use super::v0_1::types as old;

    impl From<old::PluginInfo> for new::PluginInfo {
        fn from(info: old::PluginInfo) -> new::PluginInfo {
            new::PluginInfo {
                id: info.id,
                name: info.name,
                version: info.version,
                description: info.description,
                events: info.events,
                allowed_hosts: info.allowed_hosts,
                settings: info.settings.into_iter().map(Into::into).collect(),
                rate_limit: info.rate_limit.map(|r| new::RateLimit {
                    requests: r.requests,
                    per_seconds: r.per_seconds,
                }),
                // 0.1 plugins cannot ask for more than the defaults.
                needs: new::Needs {
                    memory_mib: None,
                    component_mib: None,
                },
            }
        }
    }

    impl From<old::SettingSpec> for new::SettingSpec {
        fn from(s: old::SettingSpec) -> new::SettingSpec {
            new::SettingSpec {
                name: s.name,
                label: s.label,
                description: s.description,
                kind: match s.kind {
                    old::SettingKind::Text => new::SettingKind::Text,
                    old::SettingKind::Url => new::SettingKind::Url,
                    old::SettingKind::Integer => new::SettingKind::Integer,
                    old::SettingKind::Boolean => new::SettingKind::Boolean,
                    old::SettingKind::Choice => new::SettingKind::Choice,
                    old::SettingKind::StringMap => new::SettingKind::StringMap,
                    old::SettingKind::TemplateMap => new::SettingKind::TemplateMap,
                },
                required: s.required,
                secret: s.secret,
                default_value: s.default_value,
                options: s.options,
            }
        }
    }

    impl From<old::OutgoingRequest> for new::OutgoingRequest {
        fn from(r: old::OutgoingRequest) -> new::OutgoingRequest {
            new::OutgoingRequest {
                method: match r.method {
                    old::Method::Get => new::Method::Get,
                    old::Method::Post => new::Method::Post,
                    old::Method::Put => new::Method::Put,
                    old::Method::Patch => new::Method::Patch,
                    old::Method::Delete => new::Method::Delete,
                },
                url: r.url,
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| new::Header {
                        name: h.name,
                        value: h
                            .value
                            .into_iter()
                            .map(|s| match s {
                                old::Segment::Text(t) => new::Segment::Text(t),
                                old::Segment::Secret(n) => new::Segment::Secret(n),
                            })
                            .collect(),
                    })
                    .collect(),
                body: r.body,
                signatures: r
                    .signatures
                    .into_iter()
                    .map(|s| match s {
                        old::Signature::HmacSha256Hex(h) => {
                            new::Signature::HmacSha256Hex(new::HmacSignature {
                                header: h.header,
                                secret: h.secret,
                            })
                        }
                        old::Signature::StandardWebhooks(n) => new::Signature::StandardWebhooks(n),
                    })
                    .collect(),
            }
        }
    }

    impl From<old::Refusal> for new::Refusal {
        fn from(r: old::Refusal) -> new::Refusal {
            match r {
                old::Refusal::Skip(s) => new::Refusal::Skip(s),
                old::Refusal::InvalidConfig(s) => new::Refusal::InvalidConfig(s),
                old::Refusal::InvalidEvent(s) => new::Refusal::InvalidEvent(s),
            }
        }
    }

    impl From<old::Verdict> for new::Verdict {
        fn from(v: old::Verdict) -> new::Verdict {
            match v {
                old::Verdict::Delivered => new::Verdict::Delivered,
                old::Verdict::Retry(a) => new::Verdict::Retry(new::RetryAdvice {
                    after_seconds: a.after_seconds,
                    reason: a.reason,
                }),
                old::Verdict::Failed(s) => new::Verdict::Failed(s),
            }
        }
    }
}
