//! Exit codes, and the one-line report of an error.
//!
//! Scripts branch on the exit code, so each outcome class has its own, documented in
//! `--help` and the crate README. The class is found from the typed error anywhere in the
//! chain (never from message text).

use std::process::ExitCode;

use concord_core::{InvalidInput, StoreError};
use concord_groups::GroupError;
use concord_projection::ProjectionError;

use crate::store_url::StoreUrlError;

/// How `concord` exits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Exit {
    /// 0: done (appended, rebased, duplicate, read, interrupted tail).
    Success,
    /// 1: anything else: backend unavailable, I/O, unreadable data directory, not found.
    Failure,
    /// 2: invalid input (also clap's usage errors).
    Invalid,
    /// 3: version conflict; the concurrent events were printed.
    Conflict,
    /// 4: some, not all, of the event ids are already in the stream.
    PartialDuplicate,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Invalid => 2,
            Exit::Conflict => 3,
            Exit::PartialDuplicate => 4,
        }
    }

    /// The exit code an error deserves.
    pub fn of(error: &anyhow::Error) -> Exit {
        for cause in error.chain() {
            if let Some(e) = cause.downcast_ref::<StoreError>() {
                return Exit::of_store(e);
            }
            // Transparent: its `source()` skips the store error it wraps.
            if let Some(ProjectionError::Store(e)) = cause.downcast_ref::<ProjectionError>() {
                return Exit::of_store(e);
            }
            // Transparent too, for its store and input errors.
            match cause.downcast_ref::<GroupError>() {
                Some(GroupError::Store(e)) => return Exit::of_store(e),
                Some(GroupError::Invalid(_)) => return Exit::Invalid,
                Some(GroupError::Fixed { .. }) => return Exit::Conflict,
                Some(_) => return Exit::Failure,
                None => {}
            }
            if cause.is::<InvalidInput>() || cause.is::<StoreUrlError>() {
                return Exit::Invalid;
            }
        }
        Exit::Failure
    }

    fn of_store(e: &StoreError) -> Exit {
        match e {
            StoreError::Invalid(_) | StoreError::TooLarge(_) => Exit::Invalid,
            StoreError::Conflict(_) | StoreError::Conflicts(_) | StoreError::ConditionFailed(_) => {
                Exit::Conflict
            }
            StoreError::PartialDuplicate(_) => Exit::PartialDuplicate,
            _ => Exit::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// Whether the error is stdout closing under us (`concord all | head`): the reader has
/// what it wanted, so that is a success, not something to report.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints `error: <message with its causes>` on one line of stderr; returns the exit code.
pub fn report(error: &anyhow::Error) -> Exit {
    if is_broken_pipe(error) {
        return Exit::Success;
    }
    let message = format!("{error:#}").replace('\n', "; ");
    eprintln!("error: {message}");
    Exit::of(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_inside_a_projection_error_keeps_its_code() {
        let wrapped =
            anyhow::Error::new(ProjectionError::Store(StoreError::invalid("stream", "bad")))
                .context("rebuilding balances");
        assert_eq!(Exit::of(&wrapped), Exit::Invalid);
        let down = anyhow::Error::new(ProjectionError::Task("stopped".into()));
        assert_eq!(Exit::of(&down), Exit::Failure);
    }

    #[test]
    fn errors_map_to_their_documented_codes() {
        let invalid = anyhow::Error::new(StoreError::invalid("stream", "bad")).context("appending");
        assert_eq!(Exit::of(&invalid), Exit::Invalid);
        let down = anyhow::Error::new(StoreError::Unavailable {
            backend: "redis",
            message: "down".into(),
            source: None,
        });
        assert_eq!(Exit::of(&down), Exit::Failure);
        let url = anyhow::Error::new("ftp://x".parse::<crate::store_url::StoreUrl>().unwrap_err());
        assert_eq!(Exit::of(&url), Exit::Invalid);
        assert_eq!(Exit::of(&anyhow::anyhow!("something else")), Exit::Failure);
        assert_eq!(ExitCode::from(Exit::Conflict), ExitCode::from(3));
    }
}
