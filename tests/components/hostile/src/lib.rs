//! A misbehaving destination for the runtime's limit tests. What it does is chosen per call
//! by the `mode` setting, so that one component exercises every limit and a well-behaved
//! call (`ok`) can follow each failure on the same component.

use canopy_plugin_sdk::{
    Config, ConfigError, Destination, Event, Info, OutgoingRequest, Refusal, Request,
};

pub struct Hostile;

impl Destination for Hostile {
    fn describe() -> Info {
        Info::new("hostile", "Hostile", "0.1.0")
            .description("Breaks every limit on request")
            .allowed_hosts(["hostile.test"])
    }

    fn validate_config(_config: &Config) -> Vec<ConfigError> {
        Vec::new()
    }

    fn transform(event: &Event, config: &Config) -> Result<Vec<OutgoingRequest>, Refusal> {
        match config.text("mode").unwrap_or("ok") {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                // Reserves memory without writing it, so memory runs out long before fuel.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = Vec::with_capacity(8 << 20);
                    chunk.push(1u8);
                    hoard.push(std::hint::black_box(chunk));
                }
            }
            "big-output" => {
                let body = vec![b'x'; 12 << 20];
                Ok(vec![
                    Request::post("https://hostile.test/").body(body).build(),
                ])
            }
            "panic" => panic!("hostile plugin panicked on purpose"),
            // `spin:<ms>`: busy for that long by the clock, then an ordinary answer (a slow
            // plugin, not a hostile one).
            spin if spin.starts_with("spin:") => {
                let ms: u64 = spin["spin:".len()..].parse().unwrap_or(0);
                let started = std::time::Instant::now();
                while started.elapsed() < std::time::Duration::from_millis(ms) {
                    std::hint::black_box(());
                }
                Ok(vec![Request::post("https://hostile.test/spun").build()])
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(vec![])
            }
            "bad-url" => Ok(vec![Request::post("not a url").build()]),
            "bad-header" => Ok(vec![
                Request::post("https://hostile.test/")
                    .header("bad header\n", "x")
                    .build(),
            ]),
            "reserved-header" => Ok(vec![
                // Would have the receiver read 2 bytes of a body the host signs and logs whole.
                Request::post("https://hostile.test/")
                    .header("Content-Length", "2")
                    .body(b"{\"a\": 1}".to_vec())
                    .build(),
            ]),
            "remember" => {
                // Keeps each event's id in instance memory and reports the one before: what a
                // plugin that leaks state between calls would send.
                static PREVIOUS: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
                let mut previous = PREVIOUS.lock().unwrap_or_else(|p| p.into_inner());
                let before = previous.replace(event.id.clone().unwrap_or_default());
                Ok(vec![
                    Request::post("https://hostile.test/remember")
                        .header("X-Previous-Event", before.unwrap_or_else(|| "none".into()))
                        .build(),
                ])
            }
            "chatty" => {
                // Far more stderr than the host keeps: writes must never fail.
                for i in 0..2_000 {
                    eprintln!("debug line {i} of a chatty plugin");
                }
                Ok(vec![Request::post("https://hostile.test/chatty").build()])
            }
            "log" => {
                canopy_plugin_sdk::log::info(&format!("transforming {}", event.event));
                Ok(vec![Request::post("https://hostile.test/").build()])
            }
            _ => Ok(vec![
                Request::post("https://hostile.test/ok")
                    .header("X-Event", event.event.key())
                    .build(),
            ]),
        }
    }
}

canopy_plugin_sdk::export_destination!(Hostile);
