//! Docker's `filters` query parameter: a JSON object of filter names to values, sent
//! as `{"name":{"value":true}}` by current clients and as `{"name":["value"]}` by old ones.

use std::collections::BTreeMap;

use vic_core::Error;

/// Parsed filters: name to values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses the parameter's value; empty is no filter. Unknown filter names are
    /// refused with the list of those `allowed`, as dockerd does.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Filters, Error> {
        let raw = match raw {
            None => return Ok(Filters::default()),
            Some(r) if r.trim().is_empty() => return Ok(Filters::default()),
            Some(r) => r,
        };
        let v: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| Error::InvalidArgument(format!("invalid filter: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::InvalidArgument("invalid filter: not an object".into()))?;
        let mut out = BTreeMap::new();
        for (name, vals) in obj {
            if !allowed.contains(&name.as_str()) {
                return Err(Error::InvalidArgument(format!("invalid filter '{name}'")));
            }
            let list: Vec<String> = match vals {
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid filter '{name}': values must be an object or a list"
                    )));
                }
            };
            out.insert(name.clone(), list);
        }
        Ok(Filters(out))
    }

    /// The values of filter `name` (empty when absent).
    pub fn get(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether filter `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|v| !v.is_empty())
    }

    /// A boolean filter (`dangling=true`): `None` when absent, an error when not a bool.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Error> {
        match self.get(name) {
            [] => Ok(None),
            [v] if v == "true" || v == "1" => Ok(Some(true)),
            [v] if v == "false" || v == "0" => Ok(Some(false)),
            other => Err(Error::InvalidArgument(format!(
                "invalid filter '{name}={}'",
                other.join(",")
            ))),
        }
    }

    /// Whether `labels` satisfy every `label` filter (`key` or `key=value`).
    pub fn labels_match(&self, labels: &BTreeMap<String, String>) -> bool {
        self.get("label").iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(f),
        })
    }
}

/// Shell-style match of `name` against `pattern` with `*` and `?` (as Go's path.Match
/// for names without `/` in wildcards: `*` does not cross `/`).
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && n[0] != b'/' && go(p, &n[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings() {
        let f = Filters::parse(
            Some(r#"{"dangling":{"true":true},"label":["a=b"]}"#),
            &["dangling", "label"],
        )
        .unwrap();
        assert_eq!(f.bool("dangling").unwrap(), Some(true));
        assert!(f.labels_match(&BTreeMap::from([("a".into(), "b".into())])));
        assert!(!f.labels_match(&BTreeMap::new()));
        assert!(Filters::parse(Some(r#"{"nope":{"x":true}}"#), &["dangling"]).is_err());
        assert!(Filters::parse(Some("{"), &[]).is_err());
        assert_eq!(Filters::parse(None, &[]).unwrap(), Filters::default());
    }

    #[test]
    fn globs() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("busybox:*", "busybox:latest"));
        assert!(!glob("busy*", "reg/busybox"));
        assert!(glob("*/busybox", "reg/busybox"));
        assert!(glob("b?sybox", "busybox"));
    }
}
