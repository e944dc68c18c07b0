//! The one error type of the cloud-server tools (`announce`, `forcerenew`, `serve`).
//!
//! Contract: a tool's failure is either the caller's (a flag or the config: exit 2) or the
//! system's (exit 1); the message names the file, flag or interface and what was expected.

use std::fmt;

#[derive(Debug)]
pub enum ToolError {
    /// A flag or the config is wrong (exit 2).
    Usage(String),
    /// The system refused (exit 1).
    Runtime(String),
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Usage(m) | ToolError::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ToolError {}
