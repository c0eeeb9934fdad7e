//! Where a store lives, and the errors that name it (host and port, never a password).

use std::str::FromStr;

use postgres::{Client, NoTls};

use crate::{Error, Result};

/// Where a store lives: a connection URL and a schema.
#[derive(Debug, Clone)]
pub struct StoreAddress {
    url: String,
    pub(crate) schema: String,
    pub(crate) target: String,
}

impl StoreAddress {
    /// `url` (`postgres://user@host:port/db`, or a key=value string) and a schema name
    /// (letters, digits and `_`, not starting with a digit).
    pub fn new(url: &str, schema: &str) -> Result<Self> {
        let config = postgres::Config::from_str(url).map_err(|e| Error::Connect {
            target: "(unparsed URL)".into(),
            message: format!("the URL does not parse: {e}"),
        })?;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let target = format!(
            "{}:{}",
            if hosts.is_empty() {
                "localhost".to_owned()
            } else {
                hosts.join(",")
            },
            if ports.is_empty() {
                "5432".to_owned()
            } else {
                ports.join(",")
            }
        );
        let valid = schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && schema.len() <= 63;
        if !valid {
            return Err(Error::Store {
                target,
                message: format!(
                    "schema `{schema}`: use letters, digits and `_`, not starting with a digit \
                     (at most 63)"
                ),
            });
        }
        Ok(Self {
            url: url.to_owned(),
            schema: schema.to_owned(),
            target,
        })
    }

    /// Host and port, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Host, port and schema, for messages.
    pub fn describe(&self) -> String {
        format!("{} schema {}", self.target, self.schema)
    }

    pub(crate) fn connect(&self) -> Result<Client> {
        Client::connect(&self.url, NoTls).map_err(|e| Error::Connect {
            target: self.target.clone(),
            message: source_message(&e),
        })
    }

    pub(crate) fn query_error(&self, e: &postgres::Error) -> Error {
        Error::Query {
            target: self.target.clone(),
            message: source_message(e),
        }
    }

    pub(crate) fn store_error(&self, message: impl Into<String>) -> Error {
        Error::Store {
            target: self.describe(),
            message: message.into(),
        }
    }
}

/// The database's own words for an error (its `DbError` message, or the I/O cause).
fn source_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            message
        }
    }
}
