//! Entry names made relative to the layer root, and what a name says about AUFS
//! whiteouts.

use vic_core::Error;

/// The prefix of a whiteout: `.wh.<name>` hides `<name>` of lower layers.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The prefix of AUFS metadata entries, which are not files of the image.
pub const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// The marker that hides everything of lower layers in its directory.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How an entry name is read, for messages.
pub fn display(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// The components of `raw` relative to the layer root: a leading `/` or `./` and
/// every empty or `.` component are dropped. An empty result names the root itself.
/// `what` names the name in messages ("layer entry", "hardlink target of …").
pub fn normalize(raw: &[u8], what: &str) -> Result<Vec<Vec<u8>>, Error> {
    if raw.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} has an empty name")));
    }
    if raw.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "{what} {:?} has a NUL byte in its name",
            display(raw)
        )));
    }
    let mut comps = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(Error::InvalidArgument(format!(
                    "{what} {:?} leaves the layer",
                    display(raw)
                )));
            }
            _ => comps.push(comp.to_vec()),
        }
    }
    Ok(comps)
}

/// What the last component of an entry name says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// An ordinary file of the image.
    Plain,
    /// `.wh.<name>`: hides `<name>` of lower layers.
    Whiteout,
    /// `.wh..wh..opq`: hides all of lower layers in this directory.
    Opaque,
    /// AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`, or anything below them): skipped.
    AufsMeta,
}

/// Classifies a normalized, non-empty entry name; a whiteout without a name or an
/// entry below a whiteout is rejected.
pub fn classify(comps: &[Vec<u8>], raw: &[u8]) -> Result<NameKind, Error> {
    let Some((last, parents)) = comps.split_last() else {
        return Ok(NameKind::Plain);
    };
    for parent in parents {
        if parent.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(NameKind::AufsMeta);
        }
        if parent.starts_with(WHITEOUT_PREFIX) {
            return Err(Error::InvalidArgument(format!(
                "layer entry {:?} lies below a whiteout",
                display(raw)
            )));
        }
    }
    Ok(if last.as_slice() == OPAQUE_MARKER {
        NameKind::Opaque
    } else if last.starts_with(WHITEOUT_META_PREFIX) {
        NameKind::AufsMeta
    } else if last.as_slice() == WHITEOUT_PREFIX {
        return Err(Error::InvalidArgument(format!(
            "layer entry {:?} is a whiteout without a name",
            display(raw)
        )));
    } else if last.starts_with(WHITEOUT_PREFIX) {
        NameKind::Whiteout
    } else {
        NameKind::Plain
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(raw: &str) -> Vec<String> {
        normalize(raw.as_bytes(), "layer entry")
            .expect("valid")
            .into_iter()
            .map(|c| String::from_utf8(c).expect("utf-8"))
            .collect()
    }

    #[test]
    fn names_are_made_relative() {
        assert_eq!(comps("./a/b"), ["a", "b"]);
        assert_eq!(comps("/etc/passwd"), ["etc", "passwd"]);
        assert_eq!(comps("a//./b/"), ["a", "b"]);
        assert!(comps("./").is_empty());
        assert!(comps("/").is_empty());
    }

    #[test]
    fn escapes_and_bad_names_are_rejected() {
        for bad in ["../x", "a/../../x", "a/..", "/..", ""] {
            let err = normalize(bad.as_bytes(), "layer entry").expect_err(bad);
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
        let err = normalize(b"../x", "layer entry").expect_err("escape");
        assert_eq!(err.to_string(), r#"layer entry "../x" leaves the layer"#);
        assert!(normalize(b"a\0b", "layer entry").is_err());
    }

    #[test]
    fn whiteouts_are_recognised() {
        let kind = |raw: &str| {
            let c = normalize(raw.as_bytes(), "layer entry").expect("valid");
            classify(&c, raw.as_bytes())
        };
        assert_eq!(kind("a/b").ok(), Some(NameKind::Plain));
        assert_eq!(kind("a/.wh.b").ok(), Some(NameKind::Whiteout));
        assert_eq!(kind("a/.wh..wh..opq").ok(), Some(NameKind::Opaque));
        assert_eq!(kind(".wh..wh.plnk").ok(), Some(NameKind::AufsMeta));
        assert_eq!(kind(".wh..wh.plnk/1.2").ok(), Some(NameKind::AufsMeta));
        assert!(kind("a/.wh.").is_err());
        assert!(kind(".wh.a/b").is_err());
    }
}
