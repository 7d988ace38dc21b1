//! A destination whose `describe` traps: the host must refuse to load it.

use canopy_plugin_sdk::{Config, ConfigError, Destination, Event, Info, OutgoingRequest, Refusal};

pub struct BadDescribe;

impl Destination for BadDescribe {
    fn describe() -> Info {
        panic!("describe is broken")
    }

    fn validate_config(_config: &Config) -> Vec<ConfigError> {
        Vec::new()
    }

    fn transform(_event: &Event, _config: &Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        Ok(Vec::new())
    }
}

canopy_plugin_sdk::export_destination!(BadDescribe);
