//! Interface names, checked as the kernel's `dev_valid_name` does, so that a bad name is
//! our clear error rather than an EINVAL from some ioctl.

use crate::sys::IfName;
use crate::{HostnetError, Result};

/// Checks `name` and lays it out for the ioctls. With `pattern`, one `%d` may stand for a
/// number the kernel picks (tap creation).
pub(crate) fn check(name: &str, pattern: bool) -> Result<IfName> {
    let invalid = || HostnetError::InvalidName(name.to_owned());
    if name == "." || name == ".." {
        return Err(invalid());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return Err(invalid());
    }
    let percents = name.matches('%').count();
    if percents > 0 && !(pattern && percents == 1 && name.contains("%d")) {
        return Err(invalid());
    }
    IfName::new(name).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn names() {
        assert!(check("fvtap0", false).is_ok());
        assert!(check("fvtap%d", true).is_ok());
        assert!(check("123456789012345", false).is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:1",
            "a b",
            "a\0b",
            "1234567890123456",
        ] {
            assert!(check(bad, true).is_err(), "{bad:?}");
        }
        assert!(check("fvtap%d", false).is_err());
        assert!(check("a%d%d", true).is_err());
        assert!(check("a%s", true).is_err());
    }
}
