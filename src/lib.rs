//! cairn: a git-native context store for AI agents.
//!
//! The library is the product; the `cairn` binary is a thin shell over it.
//! Modules are layered and import only downward: [`error`], [`layout`],
//! [`schema`], [`config`] and [`event`] at the bottom; [`store`] (the only
//! module that touches git2, and the one transaction path) above them; the
//! domain modules ([`ledger`], [`project`], [`working_set`], [`memory`],
//! [`episode`], [`rules`], [`resume`] (resume packs), and [`merge`], sync's
//! three-way merge rules); the derived views ([`mirror`], [`search`],
//! [`brief`], [`watch`]); and [`open`], which hands the store the steps every
//! write takes (`Store::open`, `Store::init`), with the tools built on it
//! ([`fsck`], [`hooks`], [`backup`]). [`api`] is the layer the front ends
//! (the CLI's `--json`, MCP, HTTP) share: request types and reports;
//! [`serve`] is the HTTP server and [`mcp`] the MCP server, shells over them like the CLI. Nothing here prints or reads the
//! environment: callers pass the clock, the actor and the store path in
//! [`store::StoreOptions`].

#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod backup;
pub mod brief;
pub mod config;
pub mod episode;
pub mod error;
pub mod event;
pub mod failpoint;
pub mod fsck;
mod git_index;
pub mod hooks;
pub mod layout;
pub mod ledger;
pub mod mcp;
pub mod memory;
pub mod merge;
pub mod mirror;
pub mod open;
mod pack;
pub mod project;
pub mod resume;
pub mod rules;
pub mod schema;
pub mod search;
pub mod serve;
pub mod store;
pub mod sync;
pub mod watch;
pub mod working_set;

pub use error::{Category, Error, Result};
pub use store::idempotency;
pub use store::{Store, StoreOptions};
