//! Registry authentication: the credentials a caller passes, the `WWW-Authenticate`
//! challenges a registry answers with (RFC 7235 syntax: `Bearer realm="…",service="…",
//! scope="…"` or `Basic realm="…"`, several per header allowed), and the token server's
//! answer (Docker's token authentication specification).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// A user name and password for one registry. The password never appears in `Debug`
/// output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or a personal access token).
    pub password: String,
}

impl Credentials {
    /// Credentials from a user name and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One authentication challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`: send the credentials with every request.
    Basic {
        /// The realm, for messages.
        realm: Option<String>,
    },
    /// `Bearer realm="…",service="…",scope="…"`: get a token from `realm`.
    Bearer {
        /// The token server's URL.
        realm: String,
        /// The `service` to ask a token for.
        service: Option<String>,
        /// The scope the registry asked for, if any.
        scope: Option<String>,
    },
}

/// One parsed challenge before it is classified: scheme (lower case) and parameters
/// (names in lower case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawChallenge {
    /// The auth scheme, lower case: `bearer`, `basic`…
    pub scheme: String,
    /// The auth parameters, names lower case.
    pub params: BTreeMap<String, String>,
}

impl RawChallenge {
    /// The challenge as vic uses it; `None` for schemes vic does not speak and for a
    /// Bearer challenge without a realm.
    pub fn classify(&self) -> Option<Challenge> {
        match self.scheme.as_str() {
            "basic" => Some(Challenge::Basic {
                realm: self.params.get("realm").cloned(),
            }),
            "bearer" => Some(Challenge::Bearer {
                realm: self.params.get("realm").filter(|r| !r.is_empty())?.clone(),
                service: self.params.get("service").cloned(),
                scope: self.params.get("scope").cloned(),
            }),
            _ => None,
        }
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// A cursor over a header value.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' || c == ',' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if is_tchar(c) {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        &self.s[start..self.pos]
    }

    /// A quoted string (the cursor is on the opening quote), unescaped. An unterminated
    /// string runs to the end of the header.
    fn quoted(&mut self) -> String {
        let mut out = String::new();
        self.pos += 1;
        let mut chars = self.s[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return out;
                }
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        out.push(e);
                    }
                }
                c => out.push(c),
            }
        }
        self.pos = self.s.len();
        out
    }

    /// An unquoted value: everything up to a comma or blank.
    fn bare_value(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == ',' || c == ' ' || c == '\t' {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    /// A token68 (`abc==`, as `Negotiate abc==`) when one stands here, alone up to a
    /// comma or the end; otherwise nothing is consumed.
    fn token68(&mut self) -> Option<String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || "-._~+/".contains(c) {
                self.pos += 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            return None;
        }
        while self.peek() == Some('=') {
            self.pos += 1;
        }
        let end = self.pos;
        self.skip_ws();
        if matches!(self.peek(), None | Some(',')) {
            return Some(self.s[start..end].to_string());
        }
        self.pos = start;
        None
    }
}

/// Parses a `WWW-Authenticate` header value into its challenges, in order. Several
/// challenges may share one value (`Basic realm="a", Bearer realm="b"`); quoted values
/// may hold commas and backslash escapes. Junk is skipped rather than failing the whole
/// header.
pub fn parse_challenges(header: &str) -> Vec<RawChallenge> {
    let mut c = Cursor { s: header, pos: 0 };
    let mut out: Vec<RawChallenge> = Vec::new();
    loop {
        c.skip_ws_and_commas();
        if c.peek().is_none() {
            break;
        }
        let scheme = c.token();
        if scheme.is_empty() {
            // Not a token: skip one character and go on.
            if let Some(ch) = c.peek() {
                c.pos += ch.len_utf8();
            }
            continue;
        }
        let mut params = BTreeMap::new();
        c.skip_ws();
        if let Some(t) = c.token68() {
            params.insert(String::new(), t);
        }
        // Parameters: `name = value` pairs separated by commas. A token that is not
        // followed by `=` starts the next challenge; anything else is junk that the
        // outer loop skips.
        loop {
            let save = c.pos;
            c.skip_ws_and_commas();
            let name = c.token();
            if name.is_empty() {
                c.pos = save;
                break;
            }
            c.skip_ws();
            if c.peek() != Some('=') {
                c.pos = save;
                break;
            }
            c.pos += 1;
            c.skip_ws();
            let value = if c.peek() == Some('"') {
                c.quoted()
            } else {
                // RFC 7235 wants a token here; accept URLs left unquoted too.
                c.bare_value().to_string()
            };
            params.insert(name.to_ascii_lowercase(), value);
        }
        out.push(RawChallenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        });
    }
    out
}

/// The challenge vic should answer among all `WWW-Authenticate` values of a response:
/// Bearer when offered (as dockerd prefers), else Basic.
pub fn pick_challenge<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let all: Vec<Challenge> = headers
        .into_iter()
        .flat_map(parse_challenges)
        .filter_map(|c| c.classify())
        .collect();
    all.iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or_else(|| all.first())
        .cloned()
}

/// A token server's JSON answer. Docker's spec names the field `token`; OAuth2-style
/// servers send `access_token`; both are accepted.
#[derive(Clone, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// Seconds the token stays valid (60 when absent, per the spec).
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token to send, preferring `token`.
    pub fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_docker_hub_bearer() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            c[0].params,
            params(&[
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:library/busybox:pull,push"),
            ])
        );
        assert_eq!(
            c[0].classify(),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
    }

    #[test]
    fn parses_basic_and_several_challenges() {
        assert_eq!(
            parse_challenges(r#"Basic realm="vic-test-registry""#)[0].classify(),
            Some(Challenge::Basic {
                realm: Some("vic-test-registry".into())
            })
        );
        // Case, blanks, unquoted values, escapes, two challenges in one value.
        let h = r#"basic  Realm = "a \"quoted\", realm" , BEARER realm=https://t/token, service = svc,error="invalid_token""#;
        let c = parse_challenges(h);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params, params(&[("realm", r#"a "quoted", realm"#)]));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(
            c[1].params,
            params(&[
                ("realm", "https://t/token"),
                ("service", "svc"),
                ("error", "invalid_token")
            ])
        );
        // Bearer is preferred over Basic, across header values too.
        let picked = pick_challenge([r#"Basic realm="x""#, r#"Bearer realm="https://t/token""#]);
        assert!(
            matches!(picked, Some(Challenge::Bearer { ref realm, .. }) if realm == "https://t/token")
        );
        assert_eq!(
            pick_challenge([r#"Basic realm="x""#]),
            Some(Challenge::Basic {
                realm: Some("x".into())
            })
        );
    }

    #[test]
    fn tolerates_junk() {
        assert!(parse_challenges("").is_empty());
        assert!(parse_challenges(" , ,").is_empty());
        let c = parse_challenges("Negotiate abc==, Bearer realm=\"r\"");
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].params, params(&[("", "abc==")]));
        assert_eq!(
            c[1].classify(),
            Some(Challenge::Bearer {
                realm: "r".into(),
                service: None,
                scope: None
            })
        );
        // Unterminated quote, Bearer without realm, unknown scheme.
        let c = parse_challenges("Bearer realm=\"open");
        assert_eq!(c[0].params, params(&[("realm", "open")]));
        assert_eq!(parse_challenges("Bearer service=\"s\"")[0].classify(), None);
        assert_eq!(pick_challenge(["Digest nonce=\"1\""]), None);
        assert!(
            parse_challenges("\"stray\" Basic")
                .iter()
                .any(|c| c.scheme == "basic")
        );
        // Non-ASCII anywhere does not upset the cursor.
        for h in [
            "Bearer réalm=\"ü\", ü, \"",
            "ü",
            "Basic realm=ü",
            "Bearer realm=\"x\\ü\"",
            "Negotiate ü==",
        ] {
            let _ = parse_challenges(h);
        }
        assert_eq!(
            parse_challenges("Basic realm=\"zürich\"")[0].params["realm"],
            "zürich"
        );
    }

    #[test]
    fn token_answers_and_secrets() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.expires_in, Some(300));
        assert_eq!(t.into_token().as_deref(), Some("abc"));
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"xyz"}"#).unwrap();
        assert!(!format!("{t:?}").contains("xyz"));
        assert_eq!(t.into_token().as_deref(), Some("xyz"));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(t.into_token(), None);
        let c = Credentials::new("me", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
