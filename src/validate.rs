//! The error every config section's `validate()` returns: the key, and what is wrong with
//! its value. Lives at the bottom of the crate so each component validates its own section
//! beside its code, and `config` only gathers them.

/// A config value outside what is allowed, naming its key (`writer.max_rows`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key {key}: {message}")]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

/// An [`Invalid`] for `key`.
pub fn invalid(key: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        key,
        message: message.into(),
    }
}

/// `Err` naming `key` unless `ok`.
pub fn ensure(ok: bool, key: &'static str, message: impl Into<String>) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, message))
    }
}
