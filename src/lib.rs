//! cairn: a git-native context store for AI agents.
//!
//! The library is the product; the `cairn` binary is a thin shell over it.
//! [`store::Store`] owns every git2 call and the one transaction path; the
//! domain modules ([`working_set`], [`ledger`], [`fsck`]) plan changes and read
//! them back. Nothing here prints or reads the environment: callers pass the
//! clock, the actor and the store path in [`store::StoreOptions`].

#![warn(missing_docs)]

pub mod brief;
pub mod config;
pub mod episode;
pub mod error;
pub mod event;
pub mod fsck;
mod git_index;
pub mod hooks;
pub mod layout;
pub mod ledger;
pub mod memory;
pub mod mirror;
pub mod open;
mod pack;
pub mod project;
pub mod rules;
pub mod schema;
pub mod search;
pub mod store;
pub mod watch;
pub mod working_set;

pub use error::{Category, Error, Result};
pub use store::idempotency;
pub use store::{Store, StoreOptions};
