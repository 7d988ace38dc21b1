//! Per-event cost of each plugin's `transform` (the template and the four bundled
//! destinations) in Wasm versus the same mapping compiled natively, measured in one run.
//!
//! - native: the plugin crate built for the host, called through the SDK adapter exactly as
//!   the component's export is (parse event and settings, map, build requests);
//! - wasm warm: `Scope::Integration` — a reused instance, the production path, with the
//!   server's default limits (time-bounded, no fuel metering);
//! - warm + fuel: the same with fuel metered (what `plugin run` and `--plugin-fuel` do);
//! - wasm fresh: `Scope::Fresh` — instantiate + call + tear down per event.
//!
//! Run alone: `cargo bench -p canopy --bench canopy -- transform` (figures in
//! docs/PERFORMANCE.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use canopy::runtime::{Limits, Plugin, PluginConfig, Runtime, Scope};
use canopy_plugin_sdk::bindings::canopy::destination::types::Config as WitConfig;
use canopy_plugin_sdk::{Destination, OutgoingRequest, Refusal};
use canopy_test_support::SAMPLE_EVENT;
use serde_json::json;

/// Target from the foundation issue: warm Wasm within 3× of native per event.
const TARGET_RATIO: f64 = 3.0;
const ROUNDS: usize = 7;

struct Subject {
    name: &'static str,
    wasm: Vec<u8>,
    settings: serde_json::Value,
    secrets: Vec<String>,
    native: fn(String, WitConfig) -> Result<Vec<OutgoingRequest>, Refusal>,
}

fn native<D: Destination>(
    event: String,
    config: WitConfig,
) -> Result<Vec<OutgoingRequest>, Refusal> {
    canopy_plugin_sdk::adapter::transform::<D>(event, config)
}

/// Median over rounds of the mean time per iteration.
fn measure(iterations: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed() / iterations as u32
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2]
}

/// Median time of one `transform` of the sample event in `scope`.
fn call_time(
    plugin: &Plugin,
    scope: Scope<'_>,
    config: &PluginConfig,
    iterations: usize,
) -> Duration {
    measure(iterations, || {
        black_box(
            plugin
                .transform(scope, black_box(SAMPLE_EVENT), config)
                .ok(),
        );
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn run() {
    let bundled = |id| canopy::runtime::bundled::component(id).expect("bundled");
    let subjects = [
        Subject {
            name: "template",
            wasm: canopy_test_support::component(canopy_test_support::TEMPLATE),
            settings: json!({"url": "https://hooks.example.com/loyalty"}),
            secrets: vec!["token".into(), "signing_secret".into()],
            native: native::<canopy_plugin_template::Template>,
        },
        Subject {
            name: "klaviyo",
            wasm: bundled("klaviyo").to_vec(),
            settings: json!({}),
            secrets: vec!["api_key".into()],
            native: native::<canopy_plugin_klaviyo::Klaviyo>,
        },
        Subject {
            name: "omnisend",
            wasm: bundled("omnisend").to_vec(),
            settings: json!({}),
            secrets: vec!["api_key".into()],
            native: native::<canopy_plugin_omnisend::Omnisend>,
        },
        Subject {
            name: "shopify",
            wasm: bundled("shopify-flow").to_vec(),
            settings: json!({"shop_domain": "green-shop.myshopify.com", "trigger_handle": "loyaltytree-event"}),
            secrets: vec!["access_token".into()],
            native: native::<canopy_plugin_shopify_flow::ShopifyFlow>,
        },
        Subject {
            name: "webhook",
            wasm: bundled("webhook").to_vec(),
            settings: json!({"url": "https://hooks.example.com/{{ customer.email }}",
                "templates": {"seeds.earned.order": "{\"email\": {{ customer.email }}, \"seeds\": {{ amount }}}"}}),
            secrets: vec!["token".into(), "webhook_secret".into()],
            native: native::<canopy_plugin_webhook::Webhook>,
        },
        // The pipeline benchmark's integration: a URL without variables, the event as the
        // body, HMAC signing. Last, and left out of the load times (the same component).
        Subject {
            name: "webhook/url",
            wasm: bundled("webhook").to_vec(),
            settings: json!({"url": "https://hooks.example.com/in", "auth": "hmac"}),
            secrets: vec!["webhook_secret".into()],
            native: native::<canopy_plugin_webhook::Webhook>,
        },
    ];

    // The server's defaults (time-bounded, no fuel metering) and the same with fuel metered.
    let server = Runtime::new(Limits::default()).expect("runtime");
    let metered = Runtime::new(Limits {
        fuel_per_call: Some(canopy::runtime::DEFAULT_FUEL_PER_CALL),
        ..Limits::default()
    })
    .expect("runtime");
    println!(
        "per-event transform cost, seed example event ({} bytes), median of {ROUNDS} rounds",
        SAMPLE_EVENT.len()
    );
    println!(
        "{:<11} {:>9} {:>14} {:>14} {:>14} {:>10}  target: warm ≤ {TARGET_RATIO}× native",
        "plugin", "native", "wasm warm", "warm + fuel", "wasm fresh", "fuel/call"
    );
    for subject in &subjects {
        let bytes = &subject.wasm;
        let plugin = server.load(bytes).expect("plugin loads");
        let plugin_metered = metered.load(bytes).expect("plugin loads");
        let config = PluginConfig {
            settings: subject.settings.clone(),
            secrets_present: subject.secrets.clone(),
        };
        let wit_config = WitConfig {
            settings: subject.settings.to_string(),
            secrets_present: subject.secrets.clone(),
        };
        // Both paths must produce the same requests, or the comparison means nothing.
        let from_native =
            (subject.native)(SAMPLE_EVENT.to_owned(), wit_config.clone()).expect("native maps");
        let from_wasm = plugin_metered
            .transform(Scope::Fresh, SAMPLE_EVENT, &config)
            .expect("wasm call");
        let fuel = from_wasm.usage.fuel;
        let from_wasm = from_wasm.value.expect("wasm maps");
        assert_eq!(from_native.len(), from_wasm.len());
        for (n, w) in from_native.iter().zip(&from_wasm) {
            assert_eq!((&n.url, &n.body), (&w.url, &w.body), "same mapping");
        }

        let native = measure(20_000, || {
            black_box(
                (subject.native)(black_box(SAMPLE_EVENT.to_owned()), wit_config.clone()).ok(),
            );
        });
        let warm = call_time(&plugin, Scope::Integration("bench"), &config, 20_000);
        let warm_metered = call_time(
            &plugin_metered,
            Scope::Integration("bench"),
            &config,
            20_000,
        );
        let fresh = call_time(&plugin, Scope::Fresh, &config, 2_000);
        let ratio = |d: Duration| micros(d) / micros(native);
        let cell = |d: Duration| format!("{:.2} µs {:>4.1}×", micros(d), ratio(d));
        println!(
            "{:<11} {:>6.2} µs {:>14} {:>14} {:>14} {:>10}  {}",
            subject.name,
            micros(native),
            cell(warm),
            cell(warm_metered),
            cell(fresh),
            fuel,
            if ratio(warm) <= TARGET_RATIO {
                "met"
            } else {
                "MISSED"
            }
        );
    }

    println!(
        "webhook/url: the webhook with a URL without variables, no template, HMAC signing \
         (the pipeline benchmark's integration)"
    );
    load_times(&subjects[..subjects.len() - 1]);
    languages(&subjects[0]);
}

/// The same template destination written in each language (`plugins/template` in Rust,
/// `plugins/template-ts` in TypeScript, `plugins/template-py` in Python): what a component of
/// each costs the host; a language whose toolchain is missing is left out, said so. Compile is
/// what an upload (or a start without the precompiled cache) pays; peak RSS is how much the
/// host's resident memory rose while compiling it; precompiled is a later start's load from
/// the cache; fresh is instantiate + call + tear down, warm a call in a reused instance;
/// memory is the instance's linear memory after a call. Ratios are against the Rust row.
fn languages(rust_template: &Subject) {
    let mut subjects = vec![("Rust", rust_template.wasm.clone())];
    for (language, built, toolchain) in [
        (
            "TypeScript",
            canopy_test_support::TEMPLATE_TS,
            "npm is not installed",
        ),
        (
            "Python",
            canopy_test_support::TEMPLATE_PY,
            "python3 with venv is not installed",
        ),
    ] {
        match built {
            Some(path) => subjects.push((language, canopy_test_support::component(path))),
            None => println!("\nper-language figures: {language} SKIPPED ({toolchain})"),
        }
    }
    let cache = tempfile::tempdir().expect("temp dir");
    // The server's defaults: each template declares what it needs beyond them.
    let runtime = Runtime::with_compiled_cache(Limits::default(), Some((cache.path(), [7; 32])))
        .expect("runtime");
    let config = PluginConfig {
        settings: rust_template.settings.clone(),
        secrets_present: rust_template.secrets.clone(),
    };
    println!(
        "\nthe template destination per language (release build), seed example event, median of {ROUNDS} rounds"
    );
    println!(
        "{:<11} {:>9} {:>17} {:>9} {:>12} {:>17} {:>17} {:>17} {:>9}",
        "language",
        "size",
        "compile",
        "peak RSS",
        "precompiled",
        "instantiate",
        "fresh call",
        "warm call",
        "memory"
    );
    let mut rust_figures = None;
    for (language, wasm) in &subjects {
        let (plugin, compile, peak) = peak_rss_while(|| runtime.load(wasm).expect("loads"));
        assert_eq!(plugin.compilation(), canopy::runtime::Compilation::Compiled);
        let precompiled = runtime.load(wasm).expect("loads from the cache");
        assert_eq!(
            precompiled.compilation(),
            canopy::runtime::Compilation::Precompiled
        );
        let first = plugin
            .transform(Scope::Fresh, SAMPLE_EVENT, &config)
            .expect("the call succeeds");
        assert!(
            first.value.is_ok(),
            "{language}: the template maps the sample"
        );
        let memory = first.usage.memory_bytes;
        let fresh = call_time(&plugin, Scope::Fresh, &config, 200);
        let warm = call_time(&plugin, Scope::Integration("bench"), &config, 2_000);
        let instantiate = fresh.saturating_sub(warm);
        // Against the Rust row, on the rows after it.
        let ratio = |value: f64, index: usize| {
            rust_figures.map_or(" ".repeat(7), |base: [f64; 4]| {
                format!(" {:>5.0}×", value / base[index])
            })
        };
        let figures = [
            micros(compile) / 1000.0,
            micros(instantiate),
            micros(fresh),
            micros(warm),
        ];
        println!(
            "{:<11} {:>6} KB {:>7.0} ms{} {:>6} MB {:>9.1} ms {:>7.0} µs{} {:>7.0} µs{} {:>7.1} µs{} {:>6} KB",
            language,
            wasm.len() / 1024,
            figures[0],
            ratio(figures[0], 0),
            peak / (1024 * 1024),
            micros(precompiled.compile_time()) / 1000.0,
            figures[1],
            ratio(figures[1], 1),
            figures[2],
            ratio(figures[2], 2),
            figures[3],
            ratio(figures[3], 3),
            memory / 1024,
        );
        rust_figures.get_or_insert(figures);
    }
}

/// Runs `f` and returns its result, how long it took, and how far the process's peak
/// resident memory rose meanwhile (Linux: `VmHWM`, reset through `clear_refs`; 0 elsewhere).
fn peak_rss_while<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let status_kb = |field: &str| -> usize {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    // Writing 5 resets the peak to the current resident size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kb("VmRSS:");
    let start = Instant::now();
    let value = f();
    let elapsed = start.elapsed();
    let peak = status_kb("VmHWM:");
    (value, elapsed, peak.saturating_sub(before) * 1024)
}

/// What a start or an upload pays per component: compiling it, against loading the native
/// code a previous start kept (the precompiled cache in the data directory: read, its tag
/// checked, deserialized).
fn load_times(subjects: &[Subject]) {
    const LOADS: usize = 5;
    let cache = tempfile::tempdir().expect("temp dir");
    let plain = Runtime::new(Limits::default()).expect("runtime");
    let cached = Runtime::with_compiled_cache(Limits::default(), Some((cache.path(), [7; 32])))
        .expect("runtime");
    println!(
        "\nloading a component (release build), median of {LOADS}: compiled vs precompiled (read, tag checked)"
    );
    println!(
        "{:<10} {:>9} {:>11} {:>12} {:>8}",
        "plugin", "size", "compile", "precompiled", "ratio"
    );
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    for subject in subjects {
        let compile = median(
            (0..LOADS)
                .map(|_| plain.load(&subject.wasm).expect("loads").compile_time())
                .collect(),
        );
        cached.load(&subject.wasm).expect("loads"); // fills the cache
        let mapped = median(
            (0..LOADS)
                .map(|_| {
                    let plugin = cached.load(&subject.wasm).expect("loads");
                    assert_eq!(
                        plugin.compilation(),
                        canopy::runtime::Compilation::Precompiled
                    );
                    plugin.compile_time()
                })
                .collect(),
        );
        println!(
            "{:<10} {:>6} KB {:>8.1} ms {:>9.2} ms {:>7.0}×",
            subject.name,
            subject.wasm.len() / 1024,
            micros(compile) / 1000.0,
            micros(mapped) / 1000.0,
            micros(compile) / micros(mapped)
        );
    }
}
