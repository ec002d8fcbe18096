//! Architecture and style, enforced: the "may not depend on" table of ARCHITECTURE.md
//! (read from `cargo metadata`), and a few cheap source checks (no ignored tests, no
//! `todo!`/`unimplemented!`, no bare `matches!` statement).
//!
//! Each checker is a pure function over data (a dependency graph, a file's text), with
//! unit tests below that feed it a bad edge or a bad line, so neither check is one that
//! cannot fail. Crates of the table that do not exist yet are skipped.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use cargo_metadata::{DependencyKind, MetadataCommand};

/// How one package depends on another.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Normal,
    Build,
    Dev,
}

/// Workspace package → its direct dependencies (by package name, renames undone).
type Graph = BTreeMap<String, Vec<(String, Kind)>>;

const IO_CRATES: &[&str] = &[
    "tokio",
    "rusqlite",
    "redis",
    "fred",
    "reqwest",
    "hyper",
    "axum",
    "sqlx",
    "tokio-postgres",
    "postgres",
    "mio",
    "socket2",
    "async-std",
    "smol",
    "async-net",
];
const BACKENDS: &[&str] = &["concord-embedded", "concord-redis", "concord-postgres"];

/// One row of the table: these crates may not depend (directly, or through other
/// workspace crates) on those.
struct Rule {
    crates: &'static [&'static str],
    forbidden: Vec<&'static str>,
}

fn rules() -> Vec<Rule> {
    let mut core: Vec<&str> = IO_CRATES.to_vec();
    core.extend(["http", "anyhow"]);
    let mut api: Vec<&str> = vec!["axum", "reqwest"];
    api.extend(BACKENDS);
    let mut server: Vec<&str> = BACKENDS.to_vec();
    server.push("anyhow");
    let mut generic: Vec<&str> = BACKENDS.to_vec();
    generic.extend(["axum", "http", "hyper", "anyhow"]);
    let mut grpc: Vec<&str> = BACKENDS.to_vec();
    grpc.extend([
        "concord-server",
        "concord-api",
        "concord-client",
        "concord-command",
        "concord-projection",
        "axum",
        "anyhow",
    ]);
    // Consumer groups are generic over the store and build on core alone.
    let mut groups: Vec<&str> = generic.clone();
    groups.extend([
        "concord-command",
        "concord-projection",
        "concord-api",
        "concord-server",
        "concord-client",
    ]);
    let mut rules = vec![
        Rule {
            crates: &["concord-core"],
            forbidden: core,
        },
        Rule {
            crates: &["concord-command", "concord-projection"],
            forbidden: generic,
        },
        Rule {
            crates: &["concord-groups"],
            forbidden: groups,
        },
        Rule {
            crates: &["concord-api"],
            forbidden: api,
        },
        Rule {
            crates: &["concord-server"],
            forbidden: server,
        },
        Rule {
            crates: &["concord-client"],
            forbidden: vec!["concord-server"],
        },
        Rule {
            // The KurrentDB protocol maps onto core types and, for persistent
            // subscriptions, onto concord-groups: no backend, not the HTTP server (which
            // mounts it), not the HTTP contract, nor the command or projection layers.
            crates: &["concord-grpc"],
            forbidden: grpc,
        },
    ];
    for (i, backend) in BACKENDS.iter().enumerate() {
        let mut forbidden: Vec<&str> = BACKENDS.iter().filter(|b| *b != backend).copied().collect();
        forbidden.extend(["concord-server", "concord-client", "concord-api", "anyhow"]);
        rules.push(Rule {
            crates: &BACKENDS[i..=i],
            forbidden,
        });
    }
    rules
}

/// Every forbidden edge in `graph`, as a sentence naming the crates and the path.
fn forbidden_edges(graph: &Graph, rules: &[Rule]) -> Vec<String> {
    let mut found = Vec::new();
    for rule in rules {
        for krate in rule.crates {
            if !graph.contains_key(*krate) {
                continue; // Not written yet.
            }
            // Breadth-first through workspace crates, over non-dev edges, remembering how
            // each crate was reached so the message can show the path.
            let mut via: BTreeMap<String, Vec<String>> = BTreeMap::new();
            via.insert((*krate).to_owned(), vec![(*krate).to_owned()]);
            let mut queue = VecDeque::from([(*krate).to_owned()]);
            while let Some(current) = queue.pop_front() {
                let path = via[&current].clone();
                for (dep, kind) in graph.get(&current).into_iter().flatten() {
                    if *kind == Kind::Dev {
                        continue;
                    }
                    let mut dep_path = path.clone();
                    dep_path.push(dep.clone());
                    if rule.forbidden.contains(&dep.as_str()) {
                        found.push(format!(
                            "{krate} may not depend on {dep}, but it does ({}; {kind:?} dependency of {current})",
                            dep_path.join(" -> ")
                        ));
                    }
                    if graph.contains_key(dep) && !via.contains_key(dep) {
                        via.insert(dep.clone(), dep_path);
                        queue.push_back(dep.clone());
                    }
                }
            }
        }
    }
    for (krate, deps) in graph {
        for (dep, kind) in deps {
            if dep == "concord-testkit" && *kind != Kind::Dev {
                found.push(format!(
                    "concord-testkit may only be a dev-dependency, but {krate} has it as a {kind:?} dependency"
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn workspace_graph() -> Graph {
    let metadata = MetadataCommand::new()
        .manifest_path(workspace_root().join("Cargo.toml"))
        .no_deps()
        .exec()
        .expect("cargo metadata --no-deps --format-version 1 failed");
    let mut graph = Graph::new();
    for package in metadata.workspace_packages() {
        let deps = package
            .dependencies
            .iter()
            .map(|d| {
                let kind = match d.kind {
                    DependencyKind::Development => Kind::Dev,
                    DependencyKind::Build => Kind::Build,
                    _ => Kind::Normal,
                };
                (d.name.clone(), kind)
            })
            .collect();
        graph.insert(package.name.to_string(), deps);
    }
    graph
}

#[test]
fn no_crate_depends_on_what_the_architecture_forbids() {
    let graph = workspace_graph();
    assert!(
        graph.contains_key("concord-core"),
        "cargo metadata did not list concord-core: {:?}",
        graph.keys()
    );
    assert!(graph.contains_key("concord-testkit"));
    let found = forbidden_edges(&graph, &rules());
    assert!(
        found.is_empty(),
        "forbidden dependency edges (see ARCHITECTURE.md):\n  {}",
        found.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// Source style
// ---------------------------------------------------------------------------------------

/// The banned fragments, spelled in pieces so this file does not match itself.
fn banned() -> [(String, &'static str); 3] {
    [
        (
            concat!("#[", "ignore").to_owned(),
            "ignored test (a skipped test is a check that cannot fail)",
        ),
        (
            concat!("todo", "!(").to_owned(),
            "todo macro left in the code",
        ),
        (
            concat!("unimplemented", "!(").to_owned(),
            "unimplemented macro left in the code",
        ),
    ]
}

/// Whether the `matches!(` starting at byte `start` of `text` is a statement (its closing
/// parenthesis is followed by `;`), whose value is thrown away, rather than a tail
/// expression whose value is returned.
fn is_statement(text: &str, start: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let rest = text[start + i + c.len_utf8()..].trim_start();
                    return rest.starts_with(';');
                }
            }
            _ => {}
        }
    }
    false
}

/// The style violations in one file's text, as `file:line: what`.
fn style_violations(file: &str, text: &str) -> Vec<String> {
    let bare = concat!("matches", "!(");
    let banned = banned();
    let mut found = Vec::new();
    let mut offset = 0usize;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        let line_no = n + 1;
        if !trimmed.starts_with("//") {
            for (fragment, why) in &banned {
                if line.contains(fragment.as_str()) {
                    found.push(format!("{file}:{line_no}: {why}: {}", line.trim()));
                }
            }
            if trimmed.starts_with(bare)
                && is_statement(text, offset + (line.len() - trimmed.len()))
            {
                found.push(format!(
                    "{file}:{line_no}: bare matches! statement (its result is thrown away; write assert!(matches!(..))): {}",
                    line.trim()
                ));
            }
        }
        offset += line.len();
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn sources_have_no_ignored_tests_todos_or_bare_matches() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("examples"), &mut files);
    assert!(
        files.len() >= 10,
        "found only {} Rust files under crates/ and examples/",
        files.len()
    );
    let mut found = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        found.extend(style_violations(&shown, &text));
    }
    assert!(
        found.is_empty(),
        "style violations (STYLE.md §2.5):\n  {}",
        found.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The checkers can fail
// ---------------------------------------------------------------------------------------

fn graph(edges: &[(&str, &str, Kind)]) -> Graph {
    let mut g = Graph::new();
    for (from, to, kind) in edges {
        g.entry((*from).to_owned())
            .or_default()
            .push(((*to).to_owned(), *kind));
        if to.starts_with("concord-") {
            g.entry((*to).to_owned()).or_default();
        }
    }
    g
}

#[test]
fn a_forbidden_direct_edge_is_named() {
    let g = graph(&[
        ("concord-core", "tokio", Kind::Normal),
        ("concord-core", "serde", Kind::Normal),
    ]);
    let found = forbidden_edges(&g, &rules());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("concord-core may not depend on tokio"),
        "{found:?}"
    );
}

#[test]
fn a_dev_dependency_is_allowed() {
    let g = graph(&[
        ("concord-core", "tokio", Kind::Dev),
        ("concord-core", "anyhow", Kind::Dev),
    ]);
    assert!(forbidden_edges(&g, &rules()).is_empty());
}

#[test]
fn a_forbidden_edge_through_another_workspace_crate_is_named_with_its_path() {
    let g = graph(&[
        ("concord-command", "concord-helper", Kind::Normal),
        ("concord-helper", "concord-embedded", Kind::Normal),
        ("concord-embedded", "rusqlite", Kind::Normal),
    ]);
    let found = forbidden_edges(&g, &rules());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("concord-command -> concord-helper -> concord-embedded"),
        "{found:?}"
    );
}

#[test]
fn backends_may_not_depend_on_each_other_or_on_the_server() {
    let g = graph(&[
        ("concord-redis", "concord-embedded", Kind::Normal),
        ("concord-embedded", "concord-server", Kind::Build),
        ("concord-redis", "fred", Kind::Normal),
    ]);
    let found = forbidden_edges(&g, &rules());
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("concord-redis may not depend on concord-embedded")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("concord-embedded may not depend on concord-server")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("concord-redis may not depend on concord-server")),
        "{found:?}"
    );
    assert!(!found.iter().any(|f| f.contains("on fred")), "{found:?}");
}

#[test]
fn grpc_builds_on_groups_but_never_on_a_backend_through_them() {
    let g = graph(&[
        ("concord-grpc", "concord-core", Kind::Normal),
        ("concord-grpc", "concord-groups", Kind::Normal),
        ("concord-groups", "concord-core", Kind::Normal),
        ("concord-groups", "concord-embedded", Kind::Normal),
    ]);
    let found = forbidden_edges(&g, &rules());
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("concord-grpc may not depend on concord-embedded")),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|f| f.contains("on concord-groups")),
        "{found:?}"
    );
}

#[test]
fn groups_build_on_core_alone_and_never_on_a_backend_or_the_server() {
    let g = graph(&[
        ("concord-groups", "concord-core", Kind::Normal),
        ("concord-groups", "tokio", Kind::Normal),
        ("concord-groups", "concord-redis", Kind::Normal),
        ("concord-groups", "concord-api", Kind::Normal),
        ("concord-groups", "concord-embedded", Kind::Dev),
    ]);
    let found = forbidden_edges(&g, &rules());
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("concord-groups may not depend on concord-redis")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("concord-groups may not depend on concord-api")),
        "{found:?}"
    );
}

#[test]
fn testkit_as_a_normal_dependency_is_named() {
    let g = graph(&[
        ("concord-embedded", "concord-testkit", Kind::Normal),
        ("concord-redis", "concord-testkit", Kind::Dev),
    ]);
    let found = forbidden_edges(&g, &rules());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("concord-embedded has it as a Normal dependency"),
        "{found:?}"
    );
}

#[test]
fn crates_that_do_not_exist_yet_are_skipped() {
    let g = graph(&[("concord-core", "serde", Kind::Normal)]);
    assert!(forbidden_edges(&g, &rules()).is_empty());
}

#[test]
fn each_banned_fragment_is_reported_with_file_and_line() {
    let text = format!(
        "fn a() {{}}\n{}]\nfn b() {{ {}) }}\n// a comment about {}) is fine\nfn c() {{ {}) }}\n",
        concat!("#[", "ignore"),
        concat!("todo", "!("),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    );
    let found = style_violations("crates/x/src/lib.rs", &text);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("crates/x/src/lib.rs:2: ignored test"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("crates/x/src/lib.rs:3: todo macro"),
        "{found:?}"
    );
    assert!(
        found[2].starts_with("crates/x/src/lib.rs:5: unimplemented macro"),
        "{found:?}"
    );
}

#[test]
fn a_bare_matches_statement_is_reported_but_a_tail_expression_is_not() {
    let m = concat!("matches", "!(");
    let text = format!(
        "fn t(x: Option<u8>) {{\n    {m}x, Some(_));\n}}\nfn u(x: Option<u8>) -> bool {{\n    {m}\n        x,\n        Some(\")\")\n    )\n}}\nfn v(x: Option<u8>) {{\n    {m}x,\n        Some(1 | 2)\n    );\n}}\n"
    );
    let found = style_violations("t.rs", &text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("t.rs:2: bare matches!"), "{found:?}");
    assert!(found[1].starts_with("t.rs:11: bare matches!"), "{found:?}");
}

#[test]
fn every_backend_has_a_rule_and_every_rule_names_something() {
    let rules = rules();
    let covered: BTreeSet<&str> = rules
        .iter()
        .flat_map(|r| r.crates.iter().copied())
        .collect();
    for krate in BACKENDS.iter().chain(&[
        "concord-core",
        "concord-groups",
        "concord-api",
        "concord-server",
        "concord-client",
        "concord-grpc",
    ]) {
        assert!(covered.contains(krate), "{krate} has no rule");
    }
    assert!(rules.iter().all(|r| !r.forbidden.is_empty()));
}
