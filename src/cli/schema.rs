//! `cairn schema list | show | export`.

use std::path::PathBuf;

use cairn::schema::{file_name, text, SCHEMAS};
use cairn::Error;
use serde_json::json;

use super::{CliError, CmdResult, Ctx, Output};

/// The JSON Schemas of every artifact, as embedded in this binary.
#[derive(clap::Subcommand, Debug)]
pub enum SchemaCommand {
    /// List the schema names.
    List,
    /// Print one schema.
    Show {
        /// The schema name (see `cairn schema list`), its long name
        /// (`memory_change_request` for `mcr`) or its file name.
        name: String,
    },
    /// Write every schema into a folder as <name>.v2.1.schema.json.
    Export {
        /// The folder to write into (created if missing).
        dir: PathBuf,
    },
}

/// Long names of the schemas whose names are abbreviations.
const LONG_NAMES: &[(&str, &str)] = &[
    ("memory_change_request", "mcr"),
    ("memory_change_request_batch", "mcr_batch"),
];

/// The schema a name means: its name, a long name, either in any case and
/// with `-` or spaces for `_`, or its file name (`mcr.v2.1.schema.json`).
fn resolve(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    for suffix in [".json", ".schema", ".v2.1"] {
        if let Some(s) = n.strip_suffix(suffix) {
            n = s.to_string();
        }
    }
    match LONG_NAMES.iter().find(|(long, _)| *long == n) {
        Some((_, short)) => short.to_string(),
        None => n,
    }
}

pub fn cmd_schema(_ctx: &Ctx, cmd: SchemaCommand) -> CmdResult {
    match cmd {
        SchemaCommand::List => {
            let names: Vec<&str> = SCHEMAS.iter().map(|(n, _)| *n).collect();
            let human = names
                .iter()
                .map(|n| match LONG_NAMES.iter().find(|(_, short)| short == n) {
                    Some((long, _)) => format!("{n} ({long})"),
                    None => n.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            let aliases: serde_json::Map<String, serde_json::Value> = LONG_NAMES
                .iter()
                .map(|(long, short)| (long.to_string(), json!(short)))
                .collect();
            Ok(Output::new(
                human,
                json!({"schemas": names, "aliases": aliases}),
            ))
        }
        SchemaCommand::Show { name } => {
            let t = text(&resolve(&name)).ok_or_else(|| {
                CliError::Lib(Error::NotFound {
                    what: format!("schema {name:?} (see `cairn schema list`)"),
                })
            })?;
            let value: serde_json::Value =
                serde_json::from_str(t).expect("embedded schemas are JSON");
            Ok(Output::new(t.trim_end(), value))
        }
        SchemaCommand::Export { dir } => {
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
                op: "create",
                path: dir.clone(),
                source: e,
            })?;
            let mut written = Vec::new();
            for (name, t) in SCHEMAS {
                let path = dir.join(file_name(name));
                cairn::store::write_atomic(&path, t.as_bytes(), true)?;
                written.push(path.display().to_string());
            }
            Ok(Output::new(
                format!("wrote {} schemas to {}", written.len(), dir.display()),
                json!({"files": written}),
            ))
        }
    }
}
