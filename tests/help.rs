//! `--help` and the README's flags table say the same: every flag in one is
//! in the other, with the same environment variable and the same default.

use std::collections::BTreeMap;
use std::process::Command;

/// (env, default) per flag, from the README's table (`| \`--flag\` | \`ENV\`
/// | default | meaning |`; a row may name two flags and two variables).
fn readme_flags() -> BTreeMap<String, (String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("## Flags")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut flags = BTreeMap::new();
    for row in table.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let ticked =
            |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_string).collect() };
        let (names, envs) = (ticked(cells[0]), ticked(cells[1]));
        let default = ticked(cells[2])
            .first()
            .cloned()
            .unwrap_or_else(|| cells[2].trim().to_string());
        let default = default.replace("\\|", "|");
        for (name, env) in names.into_iter().zip(envs) {
            flags.insert(name, (env, default.clone()));
        }
    }
    flags
}

/// (env, default) per flag, from `--help`.
fn help_flags() -> BTreeMap<String, (String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_redis-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("--") {
            let name = format!("--{}", rest.split([' ', '[']).next().unwrap());
            if name != "--help" && name != "--version" {
                flags.insert(name.clone(), (String::new(), String::new()));
                current = Some(name);
            }
        } else if let Some(name) = &current {
            if let Some(env) = t.strip_prefix("[env: ").and_then(|e| e.split(['=', ']']).next()) {
                flags.get_mut(name).unwrap().0 = env.to_string();
            }
            if let Some(d) = t.strip_prefix("[default: ").and_then(|d| d.strip_suffix(']')) {
                flags.get_mut(name).unwrap().1 = d.to_string();
            }
        }
    }
    flags
}

#[test]
fn help_and_the_readme_list_the_same_flags_with_the_same_env_and_defaults() {
    let (readme, help) = (readme_flags(), help_flags());
    let missing: Vec<&String> = help.keys().filter(|f| !readme.contains_key(*f)).collect();
    assert!(
        missing.is_empty(),
        "in --help, not in the README's table: {missing:?}"
    );
    let extra: Vec<&String> = readme.keys().filter(|f| !help.contains_key(*f)).collect();
    assert!(
        extra.is_empty(),
        "in the README's table, not in --help: {extra:?}"
    );
    for (flag, (env, default)) in &help {
        let (readme_env, readme_default) = &readme[flag];
        assert_eq!(readme_env, env, "{flag}: environment variable");
        if !default.is_empty() {
            let same = readme_default == default
                || (default == "false" && readme_default == "off")
                || (default.is_empty() && readme_default == "none");
            assert!(
                same,
                "{flag}: default {default:?} in --help, {readme_default:?} in the README"
            );
        }
    }
}
