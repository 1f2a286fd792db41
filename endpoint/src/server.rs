//! The HTTP server: binds the `-H` listeners, serves HTTP/1.1 on each connection with
//! upgrades (attach, exec), and dispatches every request through the router.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tracing::{Instrument, debug, info, info_span, warn};
use vic_core::engine::API_VERSION;
use vic_core::{Engine, Error};

use crate::api;
use crate::config::Listener;
use crate::http::{Reply, error_reply};
use crate::router::{self, Op, RouteError};

/// What every request handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
}

/// A bound listener, ready to accept.
enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Binds every listener (so that an address in use is reported before anything is
/// served), then serves them all until the process ends.
pub async fn serve(listeners: &[Listener], state: Arc<AppState>) -> std::io::Result<()> {
    let mut bound = Vec::new();
    for l in listeners {
        match l {
            Listener::Tcp(addr) => {
                let tl = TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot listen on {l}: {e}"))
                })?;
                info!(listener = %l, "listening");
                bound.push(Bound::Tcp(tl));
            }
            Listener::Unix(path) => {
                // A socket file left by a killed endpoint would make bind fail.
                if std::fs::symlink_metadata(path)
                    .map(|m| {
                        use std::os::unix::fs::FileTypeExt;
                        m.file_type().is_socket()
                    })
                    .unwrap_or(false)
                {
                    let _ = std::fs::remove_file(path);
                }
                let ul = UnixListener::bind(path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot listen on {l}: {e}"))
                })?;
                info!(listener = %l, "listening");
                bound.push(Bound::Unix(ul));
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for b in bound {
        let state = state.clone();
        tasks.spawn(async move {
            loop {
                match &b {
                    Bound::Tcp(l) => match l.accept().await {
                        Ok((s, peer)) => {
                            let _ = s.set_nodelay(true);
                            debug!(%peer, "connection");
                            spawn_connection(s, state.clone());
                        }
                        Err(e) => accept_failed(e).await,
                    },
                    Bound::Unix(l) => match l.accept().await {
                        Ok((s, _)) => spawn_connection(s, state.clone()),
                        Err(e) => accept_failed(e).await,
                    },
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn accept_failed(e: std::io::Error) {
    // Running out of descriptors must not end the server: wait and retry.
    warn!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

fn spawn_connection<S>(stream: S, state: Arc<AppState>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(state, req).await) }
        });
        if let Err(e) = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await
        {
            debug!(error = %e, "connection ended");
        }
    });
}

/// Serves one request: dispatch, turn errors into Docker-style bodies, add the headers
/// that Docker puts on every answer.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Reply {
    let span = info_span!("request", method = %req.method(), path = %req.uri().path());
    let mut reply = async {
        let r = dispatch(state, req).await.unwrap_or_else(|e| {
            if e.http_status() >= 500 {
                warn!(error = %e, "request failed");
            } else {
                debug!(error = %e, "request refused");
            }
            error_reply(&e)
        });
        debug!(status = r.status().as_u16(), "answered");
        r
    }
    .instrument(span)
    .await;
    let h = reply.headers_mut();
    h.insert(
        HeaderName::from_static("api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    h.insert(
        HeaderName::from_static("docker-experimental"),
        HeaderValue::from_static("false"),
    );
    h.insert(
        HeaderName::from_static("ostype"),
        HeaderValue::from_static("linux"),
    );
    h.insert(
        hyper::header::SERVER,
        HeaderValue::from_static(concat!("vic/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    reply
}

async fn dispatch(state: Arc<AppState>, req: Request<Incoming>) -> Result<Reply, Error> {
    let path = req.uri().path().to_string();
    let (_version, path) = router::strip_version(&path)?;
    let route = match router::route(req.method().as_str(), path) {
        Ok(r) => r,
        Err(RouteError::NotFound) => {
            return Ok(crate::http::json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "message": "page not found" }),
            ));
        }
        Err(RouteError::MethodNotAllowed) => {
            return Ok(crate::http::json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({
                    "message": format!("{} is not allowed on {path}", req.method())
                }),
            ));
        }
    };
    let query = crate::http::query_pairs(req.uri());
    let param = route.params.first().map(String::as_str).unwrap_or_default();
    let engine = &state.engine;
    match route.op {
        Op::Ping => Ok(api::system::ping(req.method() == hyper::Method::HEAD)),
        Op::Version => Ok(api::system::version(&state.engine)),
        Op::Info => api::system::info(&state.engine).await,
        Op::ContainerCreate => api::containers::create(&state.engine, req).await,
        Op::Events => api::events::events(engine, &query).await,
        Op::ContainerPrune => api::containers::prune(engine, &query).await,
        Op::ContainerList => api::containers::list(engine, &query).await,
        Op::ContainerInspect => api::containers::inspect(engine, param).await,
        Op::ContainerDelete => api::containers::remove(engine, param, &query).await,
        Op::ContainerStart => api::containers::start(engine, param).await,
        Op::ContainerStop => api::containers::stop(engine, param, &query).await,
        Op::ContainerKill => api::containers::kill(engine, param, &query).await,
        Op::ContainerRestart => api::containers::restart(engine, param, &query).await,
        Op::ContainerResize => api::containers::resize(engine, param, &query).await,
        Op::ContainerAttach => api::attach::attach(engine, param, &query, req).await,
        Op::ContainerWait => api::containers::wait(engine, param, &query).await,
        Op::ContainerLogs => api::containers::logs(engine, param, &query).await,
        Op::ContainerRename => api::containers::rename(engine, param, &query).await,
        Op::ImageList => api::images::list(engine, &query).await,
        Op::ImageInspect => api::images::inspect(engine, param).await,
        Op::ImageHistory => api::images::history(engine, param).await,
        Op::ImageTag => api::images::tag(engine, param, &query).await,
        Op::ImageDelete => api::images::remove(engine, param, &query).await,
        Op::ImagePrune => api::images::prune(engine, &query).await,
        Op::ImageCreate => api::pull::create(engine, req).await,
        Op::Auth => api::pull::auth(engine, req).await,
        Op::ImageSave => api::images::save(engine, Some(param), &query).await,
        Op::ImagesSave => api::images::save(engine, None, &query).await,
        Op::ImageLoad => api::images::load(engine, req).await,
        Op::Unsupported => Err(Error::NotSupported(format!(
            "{} {} is not supported by vic yet",
            req.method(),
            route.pattern.replace("{}", "{id}").replace("{*}", "{name}")
        ))),
    }
}
