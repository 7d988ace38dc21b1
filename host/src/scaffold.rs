//! `canopy plugin new`: a complete plugin project in a new directory, outside this
//! repository — source, manifest, README, and the test settings `canopy plugin test` uses.
//!
//! - **Rust**: the source is the bundled template plugin itself (`plugins/template`), with
//!   its id and name replaced, so the scaffold never drifts from a plugin this repository
//!   builds and tests. It depends on the SDK (`plugins/sdk`) by path or by git URL; the SDK
//!   is a plain crate, ready to publish, and the dependency line is the only thing to change
//!   when it is.
//! - **TypeScript**: the TypeScript template plugin (`plugins/template-ts`, built and tested
//!   here like the Rust one) with its id and name replaced, and its manifest with the
//!   project's name, component file and SDK dependency. It builds with the Bytecode
//!   Alliance's `jco componentize` (StarlingMonkey), type-checked by `tsc` against types
//!   `jco guest-types` generates from the contract. It depends on the TypeScript SDK
//!   (`plugins/sdk-ts`, an npm package) by path (`file:`), which is what npm offers for a
//!   package inside a repository; publishing it changes only that line.
//!
//! - **Python**: the Python template plugin (`plugins/template-py`, built and tested here like
//!   the others) with its id and name replaced, its `build.sh` (a virtual environment with
//!   componentize-py and the SDK, then `python -m canopy_plugin_sdk.build`) and its
//!   `requirements.txt` naming the Python SDK (`plugins/sdk-py`) by absolute path or as a
//!   `git+` requirement with `#subdirectory=`, which pip installs from either.
//!
//! The SDK path defaults to the source tree this binary was built from, when it still exists.

use std::path::{Path, PathBuf};

use minijinja::{Environment, context};

/// The languages a plugin project can be started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    /// TypeScript (JavaScript works too: TypeScript is a superset).
    #[value(alias = "typescript")]
    Ts,
    #[value(alias = "py")]
    Python,
}

impl Language {
    /// The SDK's directory in a checkout, and the file that marks it.
    fn sdk_dir(self) -> (&'static str, &'static str) {
        match self {
            Language::Rust => ("plugins/sdk", "Cargo.toml"),
            Language::Ts => ("plugins/sdk-ts", "package.json"),
            Language::Python => ("plugins/sdk-py", "pyproject.toml"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Ts => "TypeScript",
            Language::Python => "Python",
        }
    }
}

/// The template plugin's source: the scaffold's `src/lib.rs`.
const TEMPLATE_SOURCE: &str = include_str!("../../plugins/template/src/lib.rs");

/// The TypeScript template plugin: its source, manifest and compiler settings.
const TS_TEMPLATE_SOURCE: &str = include_str!("../../plugins/template-ts/src/plugin.ts");
const TS_TEMPLATE_MANIFEST: &str = include_str!("../../plugins/template-ts/package.json");
const TS_TEMPLATE_ID: &str = "template-ts";

const TS_FILES: &[(&str, &str)] = &[
    (
        "tsconfig.json",
        include_str!("../../plugins/template-ts/tsconfig.json"),
    ),
    (
        ".gitignore",
        include_str!("../../plugins/template-ts/.gitignore"),
    ),
    ("README.md", include_str!("scaffold/ts/README.md.j2")),
    (
        "tests/settings.json",
        include_str!("scaffold/rust/settings.json.j2"),
    ),
];

/// The Python template plugin: its source, requirements and build script.
const PY_TEMPLATE_SOURCE: &str = include_str!("../../plugins/template-py/app.py");
const PY_TEMPLATE_REQUIREMENTS: &str = include_str!("../../plugins/template-py/requirements.txt");
const PY_TEMPLATE_BUILD: &str = include_str!("../../plugins/template-py/build.sh");

const PY_FILES: &[(&str, &str)] = &[
    (
        ".gitignore",
        include_str!("../../plugins/template-py/.gitignore"),
    ),
    ("README.md", include_str!("scaffold/py/README.md.j2")),
    (
        "tests/settings.json",
        include_str!("scaffold/rust/settings.json.j2"),
    ),
];

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
    /// `--sdk`: a path to the language's SDK (or to a checkout holding it), or for Rust a
    /// git URL. Without it, the SDK of the tree this binary was built from.
    pub fn locate(given: Option<&str>, language: Language) -> Result<Sdk, String> {
        let (sdk_dir, marker) = language.sdk_dir();
        let is_url = |text: &str| {
            ["https://", "http://", "ssh://", "git://", "file://"]
                .iter()
                .any(|scheme| text.starts_with(scheme))
                || (text.starts_with("git@") && text.contains(':'))
        };
        match given {
            Some(url) if is_url(url) && language == Language::Ts => Err(format!(
                "a {} SDK is taken by path (npm cannot depend on a folder inside a git \
                 repository): pass --sdk with the path of a Canopy checkout or of its {sdk_dir}",
                language.name()
            )),
            // scp-like `git@host:owner/repo`, which cargo takes only as an `ssh://` URL.
            Some(scp) if scp.starts_with("git@") && scp.contains(':') => {
                let (host, path) = scp.split_once(':').expect("checked");
                Ok(Sdk::Git(format!("ssh://{host}/{path}")))
            }
            Some(url) if is_url(url) => Ok(Sdk::Git(url.to_owned())),
            Some(path) => {
                let path = Path::new(path);
                let crate_dir = if path.join(sdk_dir).join(marker).is_file() {
                    path.join(sdk_dir)
                } else {
                    path.to_owned()
                };
                if !crate_dir.join(marker).is_file() {
                    return Err(format!(
                        "{} is not the {} plugin SDK (no {marker} there or in {sdk_dir})",
                        path.display(),
                        language.name()
                    ));
                }
                Ok(Sdk::Path(crate_dir.canonicalize().map_err(|e| {
                    format!("cannot resolve {}: {e}", crate_dir.display())
                })?))
            }
            None => {
                let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(sdk_dir);
                match built_from.canonicalize() {
                    Ok(dir) if dir.join(marker).is_file() => Ok(Sdk::Path(dir)),
                    _ => Err(format!(
                        "pass --sdk: the path of the plugin SDK ({sdk_dir} in a checkout of \
                         Canopy){}",
                        if language == Language::Ts {
                            ""
                        } else {
                            " or a git URL of the repository"
                        }
                    )),
                }
            }
        }
    }

    /// The npm dependency's version field: `file:<path>`.
    fn npm_dependency(&self) -> Result<String, String> {
        match self {
            Sdk::Path(path) => Ok(format!("file:{}", path.display())),
            Sdk::Git(url) => Err(format!(
                "{url}: a TypeScript SDK is taken by path, not from git"
            )),
        }
    }

    /// The pip requirement line: a path, or `git+<url>` with the SDK's subdirectory.
    fn pip_requirement(&self) -> String {
        match self {
            Sdk::Path(path) => path.display().to_string(),
            Sdk::Git(url) => format!(
                "canopy-plugin-sdk @ git+{url}#subdirectory={}",
                Language::Python.sdk_dir().0
            ),
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
        Language::Ts => ts_files(id, &title, sdk)?,
        Language::Python => python_files(id, &title, sdk)?,
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
    let (build, wasm) = match language {
        Language::Rust => (
            "cargo build --release --target wasm32-wasip2".to_owned(),
            format!("target/wasm32-wasip2/release/{}.wasm", id.replace('-', "_")),
        ),
        Language::Ts => (
            "npm install\n  npm run build".to_owned(),
            format!("dist/{id}.wasm"),
        ),
        Language::Python => ("sh build.sh".to_owned(), format!("dist/{id}.wasm")),
    };
    Ok(format!(
        "created {} ({} plugin `{id}`); next:\n  cd {}\n  {build}\n  \
         canopy plugin test {wasm} --bless\n",
        dir.display(),
        language.name(),
        dir.display(),
    ))
}

fn rust_files(id: &str, title: &str, sdk: &Sdk) -> Result<Vec<(String, String)>, String> {
    let values = context! {
        id,
        title,
        crate => id,
        file => id.replace('-', "_"),
        sdk => sdk.dependency(),
    };
    let mut files = render(RUST_FILES, values)?;
    files.push(("src/lib.rs".to_owned(), rust_source(id, title)?));
    Ok(files)
}

fn ts_files(id: &str, title: &str, sdk: &Sdk) -> Result<Vec<(String, String)>, String> {
    let mut files = render(TS_FILES, context! { id, title })?;
    files.push(("package.json".to_owned(), ts_manifest(id, sdk)?));
    files.push((
        "src/plugin.ts".to_owned(),
        replace_all(
            TS_TEMPLATE_SOURCE,
            &[
                (
                    "// Template destination in TypeScript — `canopy plugin new --lang ts` starts a project from\n\
                     // this file; change it into your platform's mapping.",
                    format!(
                        "// {title} destination, started from Canopy's TypeScript plugin template; change it\n\
                         // into your platform's mapping."
                    ),
                ),
                (
                    "id: 'template-ts',",
                    format!("id: '{id}',"),
                ),
                (
                    "name: 'Template (TypeScript)',",
                    format!("name: '{title}',"),
                ),
            ],
        )?,
    ));
    Ok(files)
}

fn python_files(id: &str, title: &str, sdk: &Sdk) -> Result<Vec<(String, String)>, String> {
    let mut files = render(PY_FILES, context! { id, title })?;
    files.push((
        "app.py".to_owned(),
        replace_all(
            PY_TEMPLATE_SOURCE,
            &[
                (
                    "# Template destination in Python — `canopy plugin new --lang python` starts a project from\n\
                     # this file; change it into your platform's mapping.",
                    format!(
                        "# {title} destination, started from Canopy's Python plugin template; change it into\n\
                         # your platform's mapping."
                    ),
                ),
                ("id=\"template-py\",", format!("id={id:?},")),
                ("name=\"Template (Python)\",", format!("name={title:?},")),
            ],
        )?,
    ));
    files.push((
        "requirements.txt".to_owned(),
        replace_all(
            PY_TEMPLATE_REQUIREMENTS,
            &[("\n../sdk-py\n", format!("\n{}\n", sdk.pip_requirement()))],
        )?,
    ));
    files.push((
        "build.sh".to_owned(),
        replace_all(
            PY_TEMPLATE_BUILD,
            &[("\nNAME=template-py\n", format!("\nNAME={id}\n"))],
        )?,
    ));
    Ok(files)
}

/// The TypeScript template's `package.json` as project `id`'s: its name, its component file
/// and where its SDK comes from.
fn ts_manifest(id: &str, sdk: &Sdk) -> Result<String, String> {
    let mut manifest: serde_json::Value = serde_json::from_str(TS_TEMPLATE_MANIFEST)
        .map_err(|e| format!("the TypeScript template's package.json is not JSON: {e}"))?;
    let object = manifest
        .as_object_mut()
        .ok_or("the TypeScript template's package.json is not an object")?;
    object.insert("name".into(), id.into());
    object.insert("description".into(), "A Canopy destination plugin".into());
    object.remove("license");
    let scripts = object
        .get_mut("scripts")
        .and_then(|s| s.as_object_mut())
        .ok_or("the TypeScript template's package.json has no scripts")?;
    for script in scripts.values_mut() {
        if let Some(text) = script.as_str() {
            *script = text
                .replace(
                    &format!("dist/{TS_TEMPLATE_ID}.wasm"),
                    &format!("dist/{id}.wasm"),
                )
                .into();
        }
    }
    let dependency = object
        .get_mut("devDependencies")
        .and_then(|d| d.get_mut("@canopy/plugin-sdk"))
        .ok_or("the TypeScript template's package.json does not depend on the SDK")?;
    *dependency = sdk.npm_dependency()?.into();
    Ok(serde_json::to_string_pretty(&manifest).expect("JSON serializes") + "\n")
}

/// Renders each template of `templates` with `values`.
fn render(
    templates: &[(&str, &str)],
    values: minijinja::Value,
) -> Result<Vec<(String, String)>, String> {
    let env = Environment::new();
    let mut files = Vec::new();
    for (name, source) in templates {
        let mut text = env
            .render_str(source, &values)
            .map_err(|e| format!("the {name} template does not render: {e}"))?;
        // The engine drops a template's final newline.
        if !text.ends_with('\n') {
            text.push('\n');
        }
        files.push(((*name).to_owned(), text));
    }
    Ok(files)
}

/// The template plugin's source as plugin `id`.
fn rust_source(id: &str, title: &str) -> Result<String, String> {
    replace_all(
        TEMPLATE_SOURCE,
        &[
            (
                "//! Template destination — copy this crate to start a new plugin.",
                format!("//! {title} destination, started from Canopy's plugin template."),
            ),
            (
                "Info::new(\"template\", \"Template\",",
                format!("Info::new({id:?}, {title:?},"),
            ),
        ],
    )
}

/// `source` with each `(from, to)` replaced; an error when a `from` is no longer there.
fn replace_all(source: &str, replacements: &[(&str, String)]) -> Result<String, String> {
    let mut source = source.to_owned();
    for (from, to) in replacements {
        if !source.contains(from) {
            return Err(format!(
                "the template plugin's source no longer holds `{from}`; update the scaffold"
            ));
        }
        source = source.replace(from, to);
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
        assert!(source.contains(r#"Info::new("acme-events", "Acme Events","#));
        assert!(!source.contains("\"template\""));
        let manifest = get("Cargo.toml");
        assert!(manifest.contains("name = \"acme-events\""), "{manifest}");
        assert!(manifest.contains("canopy-plugin-sdk = { path = \"/sdk\" }"));
        assert!(get("README.md").contains("release/acme_events.wasm"));
        assert!(get("README.md").contains("{{secret:name}}"));
        let git = Sdk::locate(Some("git@example.com:canopy/canopy.git"), Language::Rust).unwrap();
        assert_eq!(
            git.dependency(),
            r#"{ git = "ssh://git@example.com/canopy/canopy.git" }"#
        );
        let quoted = Sdk::Path(PathBuf::from("/a \"b\"")).dependency();
        assert_eq!(quoted, r#"{ path = "/a \"b\"" }"#);
        assert_eq!(title("acme-events"), "Acme Events");
    }

    #[test]
    fn the_typescript_scaffold_names_the_plugin_and_takes_the_sdk_by_path() {
        let temporary = tempfile::tempdir().unwrap();
        let dir = temporary.path().join("acme-ts");
        let sdk = Sdk::Path(PathBuf::from("/checkout/plugins/sdk-ts"));
        let told = new_project(&dir, "acme-ts", Language::Ts, &sdk).unwrap();
        assert!(told.contains("npm run build"), "{told}");
        assert!(told.contains("dist/acme-ts.wasm"), "{told}");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&read("package.json")).unwrap();
        assert_eq!(manifest["name"], "acme-ts");
        assert_eq!(
            manifest["devDependencies"]["@canopy/plugin-sdk"],
            "file:/checkout/plugins/sdk-ts"
        );
        assert!(
            manifest["scripts"]["build"]
                .as_str()
                .unwrap()
                .contains("-o dist/acme-ts.wasm")
        );
        let source = read("src/plugin.ts");
        assert!(source.contains("id: 'acme-ts',"), "{source}");
        assert!(source.contains("name: 'Acme Ts',"), "{source}");
        assert!(
            !source.contains("template-ts") && !source.contains("(TypeScript)'"),
            "{source}"
        );
        assert!(read("README.md").contains("{{secret:name}}"));
        assert!(read(".gitignore").contains("/node_modules"));
        // A TypeScript SDK is a path: npm cannot take a folder of a git repository.
        let err = Sdk::locate(Some("https://example.com/canopy.git"), Language::Ts).unwrap_err();
        assert!(err.contains("by path"), "{err}");
        let err = Sdk::locate(Some("/nowhere"), Language::Ts).unwrap_err();
        assert!(err.contains("no package.json"), "{err}");
    }

    #[test]
    fn the_python_scaffold_names_the_plugin_and_takes_the_sdk_by_path_or_git() {
        let temporary = tempfile::tempdir().unwrap();
        let dir = temporary.path().join("acme-py");
        let sdk = Sdk::Path(PathBuf::from("/checkout/plugins/sdk-py"));
        let told = new_project(&dir, "acme-py", Language::Python, &sdk).unwrap();
        assert!(told.contains("sh build.sh"), "{told}");
        assert!(told.contains("dist/acme-py.wasm"), "{told}");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(
            read("requirements.txt")
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .collect::<Vec<_>>(),
            ["componentize-py==0.25.1", "/checkout/plugins/sdk-py"]
        );
        assert!(read("build.sh").contains("\nNAME=acme-py\n"));
        let source = read("app.py");
        assert!(source.contains("id=\"acme-py\","), "{source}");
        assert!(source.contains("name=\"Acme Py\","), "{source}");
        assert!(
            !source.contains("template-py") && !source.contains("(Python)"),
            "{source}"
        );
        assert!(read("README.md").contains("{{secret:name}}"));
        assert!(read(".gitignore").contains("/.venv"));

        let git = Sdk::locate(Some("https://example.com/canopy.git"), Language::Python).unwrap();
        assert_eq!(
            git.pip_requirement(),
            "canopy-plugin-sdk @ git+https://example.com/canopy.git#subdirectory=plugins/sdk-py"
        );
        let err = Sdk::locate(Some("/nowhere"), Language::Python).unwrap_err();
        assert!(err.contains("no pyproject.toml"), "{err}");
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
