//! A small JSON-over-HTTP client for `loadtest` and the demo's HTTP share: an app's
//! calls to the gateway (sign-up, login, top-up, payments, read-backs).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request; returns the status and the JSON body (`Null` if it is not JSON).
pub async fn call(
    client: &HttpClient,
    method: hyper::Method,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, String)],
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value)> {
    let mut request = hyper::Request::builder().method(method.clone()).uri(url);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let body = body.map(|body| Bytes::from(body.to_string())).unwrap_or_default();
    let response = client.request(request.body(Full::new(body))?).await.with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)))
}

pub async fn post(
    client: &HttpClient,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, String)],
    body: serde_json::Value,
) -> Result<(u16, serde_json::Value)> {
    call(client, hyper::Method::POST, url, bearer, headers, Some(body)).await
}

/// Signs a user up, logs in and tops the wallet up with `top_up` EUR; returns the
/// access token.
pub async fn set_up_user(client: &HttpClient, base: &str, email: &str, top_up: &str, key: &str) -> Result<String> {
    let password = "correct horse battery staple";
    let signup = serde_json::json!({"email": email, "password": password, "display_name": "Demo user"});
    let (status, body) = post(client, &format!("{base}/v1/auth/signup"), None, &[], signup).await?;
    if status != 201 {
        bail!("sign-up answered {status}: {body}");
    }
    let login = serde_json::json!({"email": email, "password": password});
    let (status, body) = post(client, &format!("{base}/v1/auth/login"), None, &[], login).await?;
    let token =
        body["access_token"].as_str().filter(|_| status == 200).with_context(|| format!("login: {status} {body}"))?;
    let top_up = serde_json::json!({"amount": top_up, "currency": "EUR"});
    let headers = [("idempotency-key", key.to_string())];
    let (status, body) = post(client, &format!("{base}/v1/wallet/top-ups"), Some(token), &headers, top_up).await?;
    if status != 201 && status != 202 {
        bail!("top-up answered {status}: {body}");
    }
    Ok(token.to_string())
}
