//! `controller providers [--json]`: the builtin providers in the reference
//! order, with default path, default env vars and value keys. Prints no value.

use anyhow::Result;
use common::providers::{Provider, PROVIDERS};
use serde::Serialize;

use crate::cli::ProvidersArgs;
use crate::exit;
use crate::output::{print_json, Table};
use crate::Context;

#[derive(Debug, Serialize)]
struct Row {
    id: &'static str,
    default_path: Option<&'static str>,
    files: Vec<String>,
    env_vars: std::collections::BTreeMap<&'static str, &'static str>,
    value_keys: Vec<&'static str>,
}

fn row(p: &dyn Provider) -> Row {
    let shown = p.default_path().unwrap_or("~/.ssh/<key>");
    Row {
        id: p.id(),
        default_path: p.default_path(),
        files: if p.default_path().is_some() || p.id() == "ssh" {
            p.files(shown)
        } else {
            vec![]
        },
        env_vars: p.env_vars().iter().copied().collect(),
        value_keys: p.value_keys().to_vec(),
    }
}

/// Run `controller providers`.
pub fn run(args: &ProvidersArgs, _ctx: &Context) -> Result<u8> {
    let rows: Vec<Row> = PROVIDERS.iter().map(|p| row(*p)).collect();
    if args.output.json {
        print_json(&rows)?;
        return Ok(exit::OK);
    }
    let mut table = Table::new(&["id", "files", "env vars", "value keys"]);
    for r in rows {
        let files = if r.files.is_empty() {
            "-".to_owned()
        } else {
            r.files.join(" ")
        };
        let vars = if r.env_vars.is_empty() {
            "-".to_owned()
        } else {
            r.env_vars
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let keys = if r.value_keys.is_empty() {
            "(whole document)".to_owned()
        } else {
            r.value_keys.join(", ")
        };
        table.row(vec![r.id.to_owned(), files, vars, keys]);
    }
    table.print()?;
    Ok(exit::OK)
}
