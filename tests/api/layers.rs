//! Imports run one way (docs/ARCHITECTURE.md, "Layers"): each module may use only modules of
//! its own layer or below, nothing below `app.rs` imports `crate::app`, and only `http/`,
//! `app.rs` and the programs above them (the simulator, the sandbox, `main.rs`) speak actix.

use std::path::{Path, PathBuf};

/// Layers from the bottom; a module may use its own layer and those below it.
const LAYERS: &[&[&str]] = &[
    &["domain"],
    &["config", "metrics", "telemetry"],
    &["store"],
    &["idenfy"],
    &["error", "live", "memory"],
    &["service", "ops"],
    &["http"],
    &["app"],
    &["lib", "main", "dev", "sim", "bin"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/http/sse.rs` -> `http`, `src/app.rs` -> `app`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file without its comments (line comments and doc comments).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let code = line.split("//").next().unwrap_or("");
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let own = layer_of(&module);
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in code_lines(&text) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let used: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if used.is_empty() || used == module || used.chars().next().unwrap().is_uppercase()
                {
                    continue;
                }
                // `crate::MIGRATOR` and friends are items of the crate root
                if !LAYERS.iter().any(|l| l.contains(&used.as_str())) {
                    continue;
                }
                if layer_of(&used) > own {
                    problems.push(format!(
                        "{}:{n}: {module} uses {used}, a layer above it",
                        file.display()
                    ));
                }
            }
            let speaks_actix = line.contains("actix_web") || line.contains("actix::");
            if speaks_actix && own < layer_of("http") {
                problems.push(format!(
                    "{}:{n}: {module} uses actix; only http/ and above may",
                    file.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_sees_an_import_running_up() {
    let text = "use crate::service::Context; // a comment naming crate::app\n";
    let used: Vec<_> = code_lines(text).collect();
    assert_eq!(used.len(), 1);
    assert!(used[0].1.contains("crate::service"));
    assert!(!used[0].1.contains("crate::app"));
    assert!(layer_of("service") > layer_of("store"));
    assert!(layer_of("http") > layer_of("service"));
}
