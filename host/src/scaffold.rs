//! `canopy plugin new`: a complete plugin project in a new directory, outside this
//! repository — source, manifest, README, and the test settings `canopy plugin test` uses.
//!
//! The Rust project's source is the bundled template plugin itself (`plugins/template`), with
//! its id and name replaced, so the scaffold never drifts from a plugin this repository
//! builds and tests. It depends on the SDK by path (a checkout of this repository; the
//! default is the one this binary was built from, when it still exists) or by git URL; the
//! SDK is a plain crate, ready to publish, and the dependency line is the only thing to
//! change when it is.

use std::path::{Path, PathBuf};

use minijinja::{Environment, context};

/// The languages a plugin project can be started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
}

/// The template plugin's source: the scaffold's `src/lib.rs`.
const TEMPLATE_SOURCE: &str = include_str!("../../plugins/template/src/lib.rs");

const RUST_FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("scaffold/rust/Cargo.toml.j2")),
    ("README.md", include_str!("scaffold/rust/README.md.j2")),
    (".gitignore", include_str!("scaffold/rust/gitignore")),
    (
        "tests/settings.json",
        include_str!("scaffold/rust/settings.json.j2"),
    ),
];

/// Where the SDK comes from in a new project.
#[derive(Debug, Clone)]
pub enum Sdk {
    Path(PathBuf),
    Git(String),
}

impl Sdk {
    /// `--sdk`: a git URL, or a path to the SDK crate (or to a checkout holding
    /// `plugins/sdk`). Without it, the SDK of the tree this binary was built from.
    pub fn locate(given: Option<&str>) -> Result<Sdk, String> {
        match given {
            Some(url)
                if ["https://", "http://", "ssh://", "git://", "file://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme)) =>
            {
                Ok(Sdk::Git(url.to_owned()))
            }
            // scp-like `git@host:owner/repo`, which cargo takes only as an `ssh://` URL.
            Some(scp) if scp.starts_with("git@") && scp.contains(':') => {
                let (host, path) = scp.split_once(':').expect("checked");
                Ok(Sdk::Git(format!("ssh://{host}/{path}")))
            }
            Some(path) => {
                let path = Path::new(path);
                let crate_dir = if path.join("plugins/sdk/Cargo.toml").is_file() {
                    path.join("plugins/sdk")
                } else {
                    path.to_owned()
                };
                if !crate_dir.join("Cargo.toml").is_file() {
                    return Err(format!(
                        "{} is not the plugin SDK (no Cargo.toml there or in plugins/sdk)",
                        path.display()
                    ));
                }
                Ok(Sdk::Path(crate_dir.canonicalize().map_err(|e| {
                    format!("cannot resolve {}: {e}", crate_dir.display())
                })?))
            }
            None => {
                let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
                match built_from.canonicalize() {
                    Ok(dir) if dir.join("Cargo.toml").is_file() => Ok(Sdk::Path(dir)),
                    _ => Err(
                        "pass --sdk: the path of the plugin SDK (plugins/sdk in a checkout \
                              of Canopy) or a git URL of the repository"
                            .to_owned(),
                    ),
                }
            }
        }
    }

    /// The dependency's inline table. A JSON string is a valid TOML basic string.
    fn dependency(&self) -> String {
        let quoted = |text: &str| serde_json::to_string(text).expect("a string serializes");
        match self {
            Sdk::Path(path) => format!("{{ path = {} }}", quoted(&path.display().to_string())),
            Sdk::Git(url) => format!("{{ git = {} }}", quoted(url)),
        }
    }
}

/// Writes a new project for plugin `id` into `dir` (which must not exist or be empty) and
/// returns what to tell the author.
pub fn new_project(dir: &Path, id: &str, language: Language, sdk: &Sdk) -> Result<String, String> {
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(format!(
            "`{id}` is not a plugin id: lowercase letters, digits and `-`, starting with a letter"
        ));
    }
    // Names cargo refuses as a package (Rust keywords and the standard crates).
    const RESERVED: &[&str] = &[
        "alloc",
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "core",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "proc-macro",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "std",
        "struct",
        "super",
        "test",
        "trait",
        "true",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "gen",
        "macro",
        "override",
        "priv",
        "try",
        "typeof",
        "unsized",
        "virtual",
        "yield",
    ];
    if RESERVED.contains(&id) {
        return Err(format!(
            "`{id}` is reserved by Rust or cargo as a package name; choose another id"
        ));
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!("{} exists and is not empty", dir.display()));
    }
    let title = title(id);
    let files = match language {
        Language::Rust => rust_files(id, &title, sdk)?,
    };
    for (name, content) in &files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, content)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(format!(
        "created {} ({} plugin `{id}`); next:\n  cd {}\n  cargo build --release --target wasm32-wasip2\n  \
         canopy plugin test target/wasm32-wasip2/release/{}.wasm --bless\n",
        dir.display(),
        "Rust",
        dir.display(),
        id.replace('-', "_"),
    ))
}

fn rust_files(id: &str, title: &str, sdk: &Sdk) -> Result<Vec<(String, String)>, String> {
    let env = Environment::new();
    let values = context! {
        id,
        title,
        crate => id,
        file => id.replace('-', "_"),
        sdk => sdk.dependency(),
    };
    let mut files = Vec::new();
    for (name, source) in RUST_FILES {
        let mut text = env
            .render_str(source, &values)
            .map_err(|e| format!("the {name} template does not render: {e}"))?;
        // The engine drops a template's final newline.
        if !text.ends_with('\n') {
            text.push('\n');
        }
        files.push(((*name).to_owned(), text));
    }
    files.push(("src/lib.rs".to_owned(), rust_source(id, title)?));
    Ok(files)
}

/// The template plugin's source as plugin `id`.
fn rust_source(id: &str, title: &str) -> Result<String, String> {
    let replacements = [
        (
            "//! Template destination — copy this crate to start a new plugin.",
            format!("//! {title} destination, started from Canopy's plugin template."),
        ),
        ("id: \"template\".into()", format!("id: {id:?}.into()")),
        (
            "name: \"Template\".into()",
            format!("name: {title:?}.into()"),
        ),
    ];
    let mut source = TEMPLATE_SOURCE.to_owned();
    for (from, to) in replacements {
        if !source.contains(from) {
            return Err(format!(
                "the template plugin's source no longer holds `{from}`; update the scaffold"
            ));
        }
        source = source.replace(from, &to);
    }
    Ok(source)
}

/// `acme-events` → `Acme Events`.
fn title(id: &str) -> String {
    id.split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaffold_is_the_template_renamed() {
        let sdk = Sdk::Path(PathBuf::from("/sdk"));
        let files = rust_files("acme-events", "Acme Events", &sdk).unwrap();
        let get = |n: &str| &files.iter().find(|(name, _)| name == n).unwrap().1;
        let source = get("src/lib.rs");
        assert!(source.contains("id: \"acme-events\".into()"));
        assert!(source.contains("name: \"Acme Events\".into()"));
        assert!(!source.contains("\"template\""));
        let manifest = get("Cargo.toml");
        assert!(manifest.contains("name = \"acme-events\""), "{manifest}");
        assert!(manifest.contains("canopy-plugin-sdk = { path = \"/sdk\" }"));
        assert!(get("README.md").contains("release/acme_events.wasm"));
        assert!(get("README.md").contains("{{secret:name}}"));
        let git = Sdk::locate(Some("git@example.com:canopy/canopy.git")).unwrap();
        assert_eq!(
            git.dependency(),
            r#"{ git = "ssh://git@example.com/canopy/canopy.git" }"#
        );
        let quoted = Sdk::Path(PathBuf::from("/a \"b\"")).dependency();
        assert_eq!(quoted, r#"{ path = "/a \"b\"" }"#);
        assert_eq!(title("acme-events"), "Acme Events");
    }

    #[test]
    fn ids_and_directories_are_checked() {
        let sdk = Sdk::Path(PathBuf::from("/sdk"));
        let temporary = tempfile::tempdir().unwrap();
        let dir = temporary.path();
        for bad in [
            "",
            "Acme",
            "acme_events",
            "1acme",
            "acme events",
            "test",
            "fn",
        ] {
            assert!(
                new_project(&dir.join(bad.replace(' ', "x")), bad, Language::Rust, &sdk).is_err(),
                "{bad:?}"
            );
        }
        std::fs::write(dir.join("taken"), "x").unwrap();
        let err = new_project(dir, "acme", Language::Rust, &sdk).unwrap_err();
        assert!(err.contains("is not empty"), "{err}");
    }
}
