//! `ledgerflow serve`: a read-only web page over the project's ledger,
//! schedule, checks, realtime checkpoint and ingest manifest, and
//! `/metrics` for Prometheus. Server-rendered HTML (it works with
//! JavaScript off); a few lines of script refresh the page's main part.

pub mod bench;
mod pages;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use ledgerflow::config::Config;
use ledgerflow::runner::Runner;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (default: `serve.listen`, 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
}

pub(crate) struct App {
    pub runner: Runner,
    pub config: Config,
    token: Option<String>,
}

impl App {
    /// The page's state: the project read-only (nothing is closed or
    /// written on open).
    async fn open(config: Config, token: Option<String>) -> anyhow::Result<Arc<App>> {
        let runner = Runner::open_read_only(config.clone()).await?;
        Ok(Arc::new(App {
            runner,
            config,
            token,
        }))
    }
}

const COOKIE: &str = "ledgerflow_token";

pub async fn serve(config: &Path, args: ServeArgs) -> anyhow::Result<u8> {
    let config = Config::load(config)?;
    let listen = args.listen.unwrap_or_else(|| config.serve.listen.clone());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| ledgerflow::Error::Usage(format!("--listen {listen}: {e}")))?;
    let token = std::env::var("LEDGERFLOW_SERVE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| config.serve.token.as_ref().map(|t| t.0.clone()));
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(ledgerflow::Error::Usage(format!(
            "serve on {addr} (not a loopback address) needs a token: set serve.token or LEDGERFLOW_SERVE_TOKEN"
        ))
        .into());
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let app = App::open(config, token).await?;
    eprintln!(
        "serving http://{} ({})",
        listener.local_addr()?,
        if app.token.is_some() {
            "a token is required: Authorization: Bearer, or /login"
        } else {
            "no token: loopback only"
        }
    );
    // Start-up is over: keep resident only the code the pages need.
    crate::allocator::release_code_pages();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    crate::signals::on_shutdown("stopping the web page", move || {
        let _ = stop.send(());
    })?;
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await?;
    Ok(0)
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(pages::grid))
        .route("/cell/{model}/{day}", get(pages::cell))
        .route("/runs", get(pages::runs))
        .route("/checks", get(pages::checks))
        .route("/schedule", get(pages::schedule))
        .route("/realtime", get(pages::realtime))
        .route("/ingest", get(pages::ingest))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .route("/login", get(pages::login).post(login))
        .with_state(app)
}

/// `/metrics` alone, in the background of a long runner
/// (`--metrics-listen`); bound before it returns, so a bad address fails
/// the command at once.
pub async fn spawn_metrics(addr: Option<SocketAddr>, config: &Config) -> anyhow::Result<()> {
    let Some(addr) = addr else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}"))?;
    let app = App::open(config.clone(), None).await?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .with_state(app);
    tracing::info!(%addr, "serving /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("/metrics server stopped: {e}");
        }
    });
    Ok(())
}

/// Every page but `/login` needs the token when one is set.
async fn authorize(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(req).await;
    };
    if carries(req.headers(), token) {
        return next.run(req).await;
    }
    let html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html {
        return Redirect::to("/login").into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required\n",
    )
        .into_response()
}

/// Whether the request has the token, as a bearer header or the cookie.
fn carries(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim(), token));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))
        .any(|t| constant_time_eq(t, token));
    bearer || cookie
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Sets the cookie when the token is right; changes nothing else.
async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
    match &app.token {
        Some(token) if constant_time_eq(form.token.trim(), token) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                    form.token.trim()
                ),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some("wrong token")),
        )
            .into_response(),
        None => Redirect::to("/").into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    match pages::metrics_text(&app).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
