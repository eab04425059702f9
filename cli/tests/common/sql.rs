//! `paystream sql` processes and psql, a real client, against them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::{Running, paystream};

/// `paystream sql` on free ports over `data`, the analysts' login with `password`, with
/// `extra` flags; its SQL and metrics addresses.
pub fn start_sql(data: &Path, password: &str, extra: &[&str]) -> (Running, String, String) {
    let mut server = Running(
        paystream()
            .args(["sql", "--sql-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .env("PAYSTREAM_SQL_PASSWORD", password)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(server.0.stderr.take().unwrap());
    let mut line = String::new();
    let mut metrics = String::new();
    let address = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "paystream sql exited before listening");
        if let Some(url) = line.trim().strip_prefix("metrics: http://") {
            metrics = url.trim_end_matches("/metrics").to_string();
        }
        if let Some(rest) = line.trim().strip_prefix("sql: postgres://analyst@") {
            break rest.trim_end_matches("/paystream").to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (server, address, metrics)
}

/// The body of `GET /metrics` at `address`.
pub fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// psql as `user` with `command`, unaligned and tuples only (`-At`).
pub fn psql_command(address: &str, user: &str, password: &str, command: &str) -> Command {
    let (host, port) = address.rsplit_once(':').unwrap();
    let mut psql = Command::new("psql");
    // VERBOSITY=verbose: errors show their SQLSTATE.
    psql.args(["-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-At", "-h", host, "-p", port])
        .args(["-U", user, "-d", "paystream", "-c"])
        .arg(command)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    psql
}

pub fn psql_as(address: &str, user: &str, password: &str, command: &str) -> Output {
    psql_command(address, user, password, command).output().expect("psql")
}

/// psql's output for `command`, which must succeed.
pub fn psql_as_ok(address: &str, user: &str, password: &str, command: &str) -> String {
    let output = psql_as(address, user, password, command);
    assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// psql's error for `command`, which must fail.
pub fn psql_as_err(address: &str, user: &str, password: &str, command: &str) -> String {
    let output = psql_as(address, user, password, command);
    assert!(!output.status.success(), "{command} was accepted");
    String::from_utf8_lossy(&output.stderr).to_string()
}
