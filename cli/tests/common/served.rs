//! `paystream serve` processes and plain HTTP/1.1 requests to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use super::{Running, paystream};

pub struct Served {
    pub process: Running,
    pub gateway: String,
    pub operations: String,
}

pub fn start_serve(data_dir: &Path) -> Served {
    start_serve_with(data_dir, &[])
}

pub fn start_serve_with(data_dir: &Path, extra: &[&str]) -> Served {
    let mut child = Running(
        paystream()
            .args(["serve", "--http-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn paystream serve"),
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut gateway, mut operations) = (None, None);
    let (mut line, mut said) = (String::new(), String::new());
    while gateway.is_none() || operations.is_none() {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "paystream serve {extra:?} exited before listening: {said}");
        said.push_str(&line);
        if let Some(address) = line.trim().strip_prefix("gateway: http://") {
            gateway = Some(address.to_string());
        }
        if let Some(url) = line.trim().strip_prefix("metrics: http://") {
            operations = Some(url.trim_end_matches("/metrics").to_string());
        }
    }
    // Keep draining stderr so the process never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Served { process: child, gateway: gateway.unwrap(), operations: operations.unwrap() }
}

/// One HTTP/1.1 request; returns the status and the body.
pub fn http(address: &str, method: &str, path: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, String) {
    http_with(address, method, path, bearer, &[], body)
}

pub fn http_with(
    address: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(bearer) = bearer {
        request.push_str(&format!("Authorization: Bearer {bearer}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
    (status, body)
}

/// A write with an idempotency key, as the signed-in user.
pub fn post_once(address: &str, path: &str, access: &str, key: &str, body: Value) -> (u16, String) {
    http_with(address, "POST", path, Some(access), &[("Idempotency-Key", key)], Some(body))
}

pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|error| panic!("{error}: {body}"))
}
