//! Names that become path components under a provider's directory: a volume
//! name or a snapshot name must never reach outside it, so the accepted set
//! is small on purpose.

use crate::provider::{VolumeError, VolumeRef};

/// Longest accepted name: every id a job spec can make fits (a 63-byte
/// job, a 63-byte volume name, a slot index: 138 bytes), and it stays well
/// under NAME_MAX (255) so suffixes such as `.creating-` or a quarantine
/// suffix still fit in one path component.
pub const MAX_NAME_LEN: usize = 160;

/// Checks a volume, snapshot or quarantine-suffix name: 1..=160 bytes of
/// `[A-Za-z0-9._-]`, starting with a letter or digit (so never `.`, `..`,
/// a hidden name, or something that looks like a command-line option).
/// No `/`, so a name is always exactly one path component. The server's
/// volume keys (`shop-data-0`) fit; brackets (`name[0]`) do not: the agent
/// spells slots with a dash.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".to_string());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name longer than {MAX_NAME_LEN} bytes"));
    }
    let first = name.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err(format!("name {name:?} must start with a letter or digit"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} has {c:?}: only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

impl VolumeRef {
    /// The name if it is safe to use as a path component (see [`check_name`]).
    pub fn validate(&self) -> Result<&str, VolumeError> {
        check_name(&self.0).map_err(|detail| VolumeError::Invalid {
            vol: self.0.clone(),
            detail: format!("bad volume name: {detail}"),
        })?;
        Ok(&self.0)
    }
}

/// Checks a snapshot name (or a quarantine suffix) for `vol`.
pub(crate) fn check_snapshot(vol: &str, what: &str, name: &str) -> Result<(), VolumeError> {
    check_name(name).map_err(|detail| VolumeError::Invalid {
        vol: vol.to_string(),
        detail: format!("bad {what}: {detail}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_server_keys() {
        for ok in ["shop-data-0", "a", "db_1.v2", "0", "x".repeat(160).as_str()] {
            assert!(check_name(ok).is_ok(), "{ok}");
            assert!(VolumeRef(ok.to_string()).validate().is_ok());
        }
    }

    #[test]
    fn rejects_escapes_and_odd_names() {
        let long = "x".repeat(161);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            ".hidden",
            "-rf",
            "_x",
            "a b",
            "a\0b",
            "a\nb",
            "name[0]",
            "é",
            "a\\b",
            "a*",
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
            assert!(matches!(
                VolumeRef(bad.to_string()).validate(),
                Err(VolumeError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn dots_inside_are_fine_but_not_a_component() {
        // "a..b" is one component, not a parent reference.
        assert!(check_name("a..b").is_ok());
        assert!(check_name("..a").is_err());
    }
}
