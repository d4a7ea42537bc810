//! The one place where older on-disk formats become the current one.
//!
//! Both files carry the format version in their header. Recovery passes every payload (the
//! snapshot body and each log record) of an older version through [`migrate`] before decoding
//! it, so the decoders only ever know [`FORMAT_VERSION`]. A version newer than this binary's is
//! refused before anything is read (a downgrade must never half-understand a record).

use std::borrow::Cow;

use super::codec::FORMAT_VERSION;

/// Turn a payload written by format `version` into the current format's bytes.
///
/// Version 1 is the first format, so there is nothing to migrate yet. It has not been released:
/// until it is, record shapes may still change in place without a version bump (so far:
/// `AuthRecord::Iam.region` became optional), and a store written by an older development build
/// is refused at recovery as undecodable rather than migrated — remove it and let the daemon
/// re-import its config. From the first release on, a change to a record bumps
/// [`FORMAT_VERSION`]: add an arm here that decodes the old type (kept in a `v1` module) and
/// re-encodes it.
pub fn migrate(version: u32, bytes: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    match version {
        FORMAT_VERSION => Ok(Cow::Borrowed(bytes)),
        v if v > FORMAT_VERSION => Err(format!(
            "version {v} is newer than this bastion's {FORMAT_VERSION}"
        )),
        v => Err(format!("no migration from version {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_version_passes_through_others_are_refused() {
        assert_eq!(&*migrate(FORMAT_VERSION, b"x").unwrap(), b"x");
        assert!(migrate(0, b"x").is_err());
        assert!(migrate(FORMAT_VERSION + 1, b"x").is_err());
    }
}
