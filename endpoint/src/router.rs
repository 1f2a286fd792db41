//! Maps a request's method and path onto an operation: strips and checks the `/v1.NN`
//! version prefix, then matches the path against the Docker Engine API's routes.
//! Routes that Docker has and vic does not serve yet are told apart from paths that do
//! not exist, so clients get "not supported" (501) rather than "page not found" (404).

use vic_core::Error;
use vic_core::engine::{API_VERSION, MIN_API_VERSION};

/// The operations this endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET|HEAD /_ping`.
    Ping,
    /// `GET /version`.
    Version,
    /// `GET /info`.
    Info,
    /// `POST /containers/create`.
    ContainerCreate,
    /// `GET /events`.
    Events,
    /// `POST /containers/prune`.
    ContainerPrune,
    /// `GET /containers/json`.
    ContainerList,
    /// `GET /containers/{id}/json`.
    ContainerInspect,
    /// `DELETE /containers/{id}`.
    ContainerDelete,
    /// `POST /containers/{id}/rename`.
    ContainerRename,
    /// `POST /containers/{id}/start`.
    ContainerStart,
    /// `POST /containers/{id}/stop`.
    ContainerStop,
    /// `POST /containers/{id}/kill`
    ContainerKill,
    /// `POST /containers/{id}/restart`
    ContainerRestart,
    /// `POST /containers/{id}/resize`
    ContainerResize,
    /// `POST /containers/{id}/attach`
    ContainerAttach,
    /// `POST /containers/{id}/wait`.
    ContainerWait,
    /// `GET /containers/{id}/logs`.
    ContainerLogs,
    /// `GET /images/json`.
    ImageList,
    /// `GET /images/{name}/json`.
    ImageInspect,
    /// `GET /images/{name}/history`.
    ImageHistory,
    /// `POST /images/{name}/tag`.
    ImageTag,
    /// `DELETE /images/{name}`.
    ImageDelete,
    /// `POST /images/prune`.
    ImagePrune,
    /// `POST /images/create` (pull).
    ImageCreate,
    /// `POST /auth`.
    Auth,
    /// `GET /images/{name}/get`.
    ImageSave,
    /// `GET /images/get`.
    ImagesSave,
    /// `POST /images/load`.
    ImageLoad,
    /// A Docker API route that vic does not serve.
    Unsupported,
}

/// A matched route: the operation and the path parameters in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// What to do.
    pub op: Op,
    /// Values of the `{…}` parts of the pattern.
    pub params: Vec<String>,
    /// The pattern that matched, e.g. `/containers/{id}/start`.
    pub pattern: &'static str,
}

/// A Docker API version `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    /// Parses `1.41`.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (a, b) = s.split_once('.')?;
        Some(ApiVersion(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// Splits `/v1.41/containers/json` into the version and `/containers/json`, and refuses
/// versions outside what vic serves with Docker's wording.
pub fn strip_version(path: &str) -> Result<(Option<ApiVersion>, &str), Error> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((None, path));
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Some(v) = ApiVersion::parse(ver) else {
        // "/volumes" and friends also start with "/v".
        return Ok((None, path));
    };
    let max = ApiVersion::parse(API_VERSION).unwrap_or(ApiVersion(1, 41));
    let min = ApiVersion::parse(MIN_API_VERSION).unwrap_or(ApiVersion(1, 24));
    if v > max {
        return Err(Error::InvalidArgument(format!(
            "client version {v} is too new. Maximum supported API version is {max}"
        )));
    }
    if v < min {
        return Err(Error::InvalidArgument(format!(
            "client version {v} is too old. Minimum supported API version is {min}, \
             please upgrade your client to a newer version"
        )));
    }
    Ok((Some(v), tail))
}

/// Every route of the Docker Engine API, with the operation vic serves for it.
/// `{}` matches one path segment, `{*}` one or more (image names contain slashes).
/// More specific routes come first.
const ROUTES: &[(&str, &str, Op)] = &[
    ("GET", "/_ping", Op::Ping),
    ("HEAD", "/_ping", Op::Ping),
    ("GET", "/version", Op::Version),
    ("GET", "/info", Op::Info),
    ("GET", "/events", Op::Events),
    ("GET", "/system/df", Op::Unsupported),
    ("POST", "/auth", Op::Auth),
    ("POST", "/session", Op::Unsupported),
    // containers
    ("GET", "/containers/json", Op::ContainerList),
    ("POST", "/containers/create", Op::ContainerCreate),
    ("POST", "/containers/prune", Op::ContainerPrune),
    ("GET", "/containers/{}/json", Op::ContainerInspect),
    ("GET", "/containers/{}/top", Op::Unsupported),
    ("GET", "/containers/{}/logs", Op::ContainerLogs),
    ("GET", "/containers/{}/changes", Op::Unsupported),
    ("GET", "/containers/{}/export", Op::Unsupported),
    ("GET", "/containers/{}/stats", Op::Unsupported),
    ("POST", "/containers/{}/resize", Op::ContainerResize),
    ("POST", "/containers/{}/start", Op::ContainerStart),
    ("POST", "/containers/{}/stop", Op::ContainerStop),
    ("POST", "/containers/{}/restart", Op::ContainerRestart),
    ("POST", "/containers/{}/kill", Op::ContainerKill),
    ("POST", "/containers/{}/update", Op::Unsupported),
    ("POST", "/containers/{}/rename", Op::ContainerRename),
    ("POST", "/containers/{}/pause", Op::Unsupported),
    ("POST", "/containers/{}/unpause", Op::Unsupported),
    ("POST", "/containers/{}/attach", Op::ContainerAttach),
    ("GET", "/containers/{}/attach/ws", Op::Unsupported),
    ("POST", "/containers/{}/wait", Op::ContainerWait),
    ("DELETE", "/containers/{}", Op::ContainerDelete),
    ("HEAD", "/containers/{}/archive", Op::Unsupported),
    ("GET", "/containers/{}/archive", Op::Unsupported),
    ("PUT", "/containers/{}/archive", Op::Unsupported),
    ("POST", "/containers/{}/exec", Op::Unsupported),
    // exec
    ("POST", "/exec/{}/start", Op::Unsupported),
    ("POST", "/exec/{}/resize", Op::Unsupported),
    ("GET", "/exec/{}/json", Op::Unsupported),
    // images
    ("GET", "/images/json", Op::ImageList),
    ("POST", "/images/create", Op::ImageCreate),
    ("GET", "/images/search", Op::Unsupported),
    ("POST", "/images/prune", Op::ImagePrune),
    ("GET", "/images/get", Op::ImagesSave),
    ("POST", "/images/load", Op::ImageLoad),
    ("GET", "/images/{*}/json", Op::ImageInspect),
    ("GET", "/images/{*}/history", Op::ImageHistory),
    ("POST", "/images/{*}/push", Op::Unsupported),
    ("POST", "/images/{*}/tag", Op::ImageTag),
    ("GET", "/images/{*}/get", Op::ImageSave),
    ("DELETE", "/images/{*}", Op::ImageDelete),
    ("POST", "/build", Op::Unsupported),
    ("POST", "/build/prune", Op::Unsupported),
    ("POST", "/build/cancel", Op::Unsupported),
    ("POST", "/commit", Op::Unsupported),
    ("GET", "/distribution/{*}/json", Op::Unsupported),
    // networks
    ("GET", "/networks", Op::Unsupported),
    ("POST", "/networks/create", Op::Unsupported),
    ("POST", "/networks/prune", Op::Unsupported),
    ("GET", "/networks/{}", Op::Unsupported),
    ("DELETE", "/networks/{}", Op::Unsupported),
    ("POST", "/networks/{}/connect", Op::Unsupported),
    ("POST", "/networks/{}/disconnect", Op::Unsupported),
    // volumes
    ("GET", "/volumes", Op::Unsupported),
    ("POST", "/volumes/create", Op::Unsupported),
    ("POST", "/volumes/prune", Op::Unsupported),
    ("GET", "/volumes/{}", Op::Unsupported),
    ("PUT", "/volumes/{}", Op::Unsupported),
    ("DELETE", "/volumes/{}", Op::Unsupported),
    // swarm and friends, plugins
    ("GET", "/swarm", Op::Unsupported),
    ("POST", "/swarm/init", Op::Unsupported),
    ("POST", "/swarm/join", Op::Unsupported),
    ("POST", "/swarm/leave", Op::Unsupported),
    ("POST", "/swarm/update", Op::Unsupported),
    ("GET", "/swarm/unlockkey", Op::Unsupported),
    ("POST", "/swarm/unlock", Op::Unsupported),
    ("GET", "/nodes", Op::Unsupported),
    ("GET", "/nodes/{}", Op::Unsupported),
    ("DELETE", "/nodes/{}", Op::Unsupported),
    ("POST", "/nodes/{}/update", Op::Unsupported),
    ("GET", "/services", Op::Unsupported),
    ("POST", "/services/create", Op::Unsupported),
    ("GET", "/services/{}", Op::Unsupported),
    ("DELETE", "/services/{}", Op::Unsupported),
    ("POST", "/services/{}/update", Op::Unsupported),
    ("GET", "/services/{}/logs", Op::Unsupported),
    ("GET", "/tasks", Op::Unsupported),
    ("GET", "/tasks/{}", Op::Unsupported),
    ("GET", "/tasks/{}/logs", Op::Unsupported),
    ("GET", "/secrets", Op::Unsupported),
    ("POST", "/secrets/create", Op::Unsupported),
    ("GET", "/secrets/{}", Op::Unsupported),
    ("DELETE", "/secrets/{}", Op::Unsupported),
    ("POST", "/secrets/{}/update", Op::Unsupported),
    ("GET", "/configs", Op::Unsupported),
    ("POST", "/configs/create", Op::Unsupported),
    ("GET", "/configs/{}", Op::Unsupported),
    ("DELETE", "/configs/{}", Op::Unsupported),
    ("POST", "/configs/{}/update", Op::Unsupported),
    ("GET", "/plugins", Op::Unsupported),
    ("GET", "/plugins/privileges", Op::Unsupported),
    ("POST", "/plugins/pull", Op::Unsupported),
    ("POST", "/plugins/create", Op::Unsupported),
    ("GET", "/plugins/{*}/json", Op::Unsupported),
    ("DELETE", "/plugins/{*}", Op::Unsupported),
    ("POST", "/plugins/{*}/enable", Op::Unsupported),
    ("POST", "/plugins/{*}/disable", Op::Unsupported),
    ("POST", "/plugins/{*}/upgrade", Op::Unsupported),
    ("POST", "/plugins/{*}/push", Op::Unsupported),
    ("POST", "/plugins/{*}/set", Op::Unsupported),
];

/// Matches `path` against `pattern`, returning the parameters.
fn match_pattern(pattern: &str, path: &str) -> Option<Vec<String>> {
    let pat: Vec<&str> = pattern.split('/').skip(1).collect();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let mut params = Vec::new();
    if let Some(star) = pat.iter().position(|p| *p == "{*}") {
        let suffix = &pat[star + 1..];
        if segs.len() < pat.len() {
            return None;
        }
        let tail_start = segs.len() - suffix.len();
        for (p, s) in pat[..star].iter().zip(&segs[..star]) {
            match_segment(p, s, &mut params)?;
        }
        let middle = &segs[star..tail_start];
        if middle.is_empty() || middle.iter().any(|s| s.is_empty()) {
            return None;
        }
        params.push(middle.join("/"));
        for (p, s) in suffix.iter().zip(&segs[tail_start..]) {
            match_segment(p, s, &mut params)?;
        }
        return Some(params);
    }
    if pat.len() != segs.len() {
        return None;
    }
    for (p, s) in pat.iter().zip(&segs) {
        match_segment(p, s, &mut params)?;
    }
    Some(params)
}

fn match_segment(pattern: &str, seg: &str, params: &mut Vec<String>) -> Option<()> {
    if pattern == "{}" {
        if seg.is_empty() {
            return None;
        }
        params.push(seg.to_string());
        Some(())
    } else if pattern == seg {
        Some(())
    } else {
        None
    }
}

/// Finds the route for `method` and `path` (without version prefix).
/// `Err(404)` when no Docker route has that path, `Err(405)` when the path exists
/// under other methods.
pub fn route(method: &str, path: &str) -> Result<Route, RouteError> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let mut path_known = false;
    for (m, pattern, op) in ROUTES {
        if let Some(params) = match_pattern(pattern, path) {
            if *m == method {
                return Ok(Route {
                    op: *op,
                    params,
                    pattern,
                });
            }
            path_known = true;
        }
    }
    Err(if path_known {
        RouteError::MethodNotAllowed
    } else {
        RouteError::NotFound
    })
}

/// Why no route matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No route has this path.
    NotFound,
    /// The path exists, but not with this method.
    MethodNotAllowed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            strip_version("/v1.41/info").unwrap(),
            (Some(ApiVersion(1, 41)), "/info")
        );
        assert_eq!(strip_version("/info").unwrap(), (None, "/info"));
        assert_eq!(strip_version("/volumes").unwrap(), (None, "/volumes"));
        let e = strip_version("/v1.99/info").unwrap_err();
        assert!(e.to_string().contains("too new"), "{e}");
        assert_eq!(e.http_status(), 400);
        assert!(
            strip_version("/v1.12/info")
                .unwrap_err()
                .to_string()
                .contains("too old")
        );
        assert!(ApiVersion(1, 9) < ApiVersion(1, 41));
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/_ping").unwrap().op, Op::Ping);
        assert_eq!(route("HEAD", "/_ping").unwrap().op, Op::Ping);
        assert_eq!(route("GET", "/info/").unwrap().op, Op::Info);
        let r = route("GET", "/containers/abc/json").unwrap();
        assert_eq!(
            (r.op, r.params),
            (Op::ContainerInspect, vec!["abc".to_string()])
        );
        let r = route("POST", "/containers/abc/kill").unwrap();
        assert_eq!(
            (r.op, r.pattern),
            (Op::ContainerKill, "/containers/{}/kill")
        );
        let r = route("POST", "/containers/abc/pause").unwrap();
        assert_eq!((r.op, r.pattern), (Op::Unsupported, "/containers/{}/pause"));
        let r = route("GET", "/images/127.0.0.1:5000/lib/busybox/json").unwrap();
        assert_eq!(r.params, vec!["127.0.0.1:5000/lib/busybox".to_string()]);
        assert_eq!(
            route("GET", "/images/json").unwrap().pattern,
            "/images/json"
        );
        let r = route("DELETE", "/images/a/b").unwrap();
        assert_eq!(r.params, vec!["a/b".to_string()]);
        assert_eq!(route("GET", "/nope"), Err(RouteError::NotFound));
        assert_eq!(route("GET", "/containers//json"), Err(RouteError::NotFound));
        assert_eq!(route("DELETE", "/info"), Err(RouteError::MethodNotAllowed));
    }
}
