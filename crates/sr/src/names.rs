//! VDI file names. A name from a client is checked before it touches the filesystem: only
//! `<uuid>.qcow2` and `<uuid>.base.qcow2` with a lower-case uuid pass, so no name can hold a
//! `/`, a `..` or anything else that leaves the SR directory.

use crate::error::SrError;

/// The SR's lock file.
pub(crate) const LOCK: &str = ".fv-sr.lock";
const VDI_SUFFIX: &str = ".qcow2";
const BASE_SUFFIX: &str = ".base.qcow2";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A VDI: `<uuid>.qcow2`.
    Vdi,
    /// A hidden base copy: `<uuid>.base.qcow2`.
    Base,
}

/// Whether `s` is a uuid in its canonical, lower-case, hyphenated form.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

fn bad(name: &str, reason: &str) -> SrError {
    SrError::BadName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The uuid and role of file `name`, or why it is not a VDI file name.
pub(crate) fn parse(name: &str) -> Result<(&str, Role), SrError> {
    let (uuid, role) = if let Some(uuid) = name.strip_suffix(BASE_SUFFIX) {
        (uuid, Role::Base)
    } else if let Some(uuid) = name.strip_suffix(VDI_SUFFIX) {
        (uuid, Role::Vdi)
    } else {
        return Err(bad(name, "VDI files are named <uuid>.qcow2"));
    };
    if !is_uuid(uuid) {
        return Err(bad(
            name,
            "VDI files are named <uuid>.qcow2, with a lower-case uuid",
        ));
    }
    Ok((uuid, role))
}

/// The file name of the VDI with `uuid`.
pub(crate) fn vdi_name(uuid: &str) -> Result<String, SrError> {
    if !is_uuid(uuid) {
        return Err(bad(uuid, "not a lower-case uuid"));
    }
    Ok(format!("{uuid}{VDI_SUFFIX}"))
}

/// The file name of the base copy with `uuid` (a uuid this crate made).
pub(crate) fn base_name(uuid: &str) -> String {
    format!("{uuid}{BASE_SUFFIX}")
}

/// The temporary name a file `target` is built under.
pub(crate) fn tmp(target: &str) -> String {
    format!(".{target}{TMP_SUFFIX}")
}

/// Whether `name` is a temporary file of this driver.
pub(crate) fn is_tmp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TMP_SUFFIX)
}

/// A new random (version 4) uuid.
pub(crate) fn random_uuid() -> Result<String, SrError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| SrError::Io {
        op: "get random bytes for",
        path: "a new uuid".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0c899d3a-48af-4fb7-b8dc-c63329a9d6b0";

    #[test]
    fn good_names() {
        assert_eq!(parse(&format!("{U}.qcow2")).unwrap(), (U, Role::Vdi));
        assert_eq!(parse(&base_name(U)).unwrap(), (U, Role::Base));
        assert_eq!(vdi_name(U).unwrap(), format!("{U}.qcow2"));
        let r = random_uuid().unwrap();
        assert!(is_uuid(&r), "{r}");
        assert_ne!(r, random_uuid().unwrap());
        assert!(is_tmp(&tmp(&vdi_name(U).unwrap())));
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "",
            ".qcow2",
            "../x.qcow2",
            &format!("../{U}.qcow2"),
            &format!("{U}/../../etc/passwd.qcow2"),
            &format!("/{U}.qcow2"),
            &format!("{U}.qcow2/"),
            &format!("{U}.raw"),
            &format!("{}.qcow2", U.to_uppercase()),
            &format!("{U}x.qcow2"),
            &format!(".{U}.qcow2"),
            &format!("{U}.qcow2.tmp"),
            "0c899d3a-48af-4fb7-b8dc-c63329a9d6b.qcow2",
            "0c899d3a+48af-4fb7-b8dc-c63329a9d6b0.qcow2",
            "..........................................",
        ] {
            assert!(parse(name).is_err(), "{name:?}");
        }
        for uuid in ["", "..", "../etc", &format!("{U}/"), &format!("{U}\0")] {
            assert!(vdi_name(uuid).is_err(), "{uuid:?}");
        }
    }
}
