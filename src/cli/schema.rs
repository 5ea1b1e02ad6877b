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
        /// The schema name (see `cairn schema list`).
        name: String,
    },
    /// Write every schema into a folder as <name>.v2.1.schema.json.
    Export {
        /// The folder to write into (created if missing).
        dir: PathBuf,
    },
}

pub fn cmd_schema(_ctx: &Ctx, cmd: SchemaCommand) -> CmdResult {
    match cmd {
        SchemaCommand::List => {
            let names: Vec<&str> = SCHEMAS.iter().map(|(n, _)| *n).collect();
            Ok(Output::new(names.join("\n"), json!({"schemas": names})))
        }
        SchemaCommand::Show { name } => {
            let t = text(&name).ok_or_else(|| {
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
