//! One module per `gear` subcommand (or group of subcommands): its arguments and how it runs.

pub mod data;
pub mod demo;
pub mod embed;
pub mod eval;
pub mod export;
pub mod index;
pub mod index_store;
pub mod pair;
pub mod rerank;
pub mod score;
pub mod search;
pub mod serve;
pub mod train;
