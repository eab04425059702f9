//! A continuous view of decisions per outcome and hour, and the check that holds it to a
//! batch query over the same decisions.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use super::served::http;
use super::{Running, dump, paystream, run_ok, topic};

/// Decisions per outcome and hour, and their amounts, as the view `name`.
pub fn view_sql(name: &str, lateness: &str, idle: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW {name} WITH (lateness = '{lateness}', idle_timeout = '{idle}') AS \
         SELECT date_bin(INTERVAL '1 hour', event_time) AS window_start, outcome, \
                count(*) AS decisions, sum(amount_minor) AS amount_minor \
         FROM decisions GROUP BY 1, 2;"
    )
}

/// Writes [`view_sql`] to `dir/views.sql`; returns its path.
pub fn views_file(dir: &Path, name: &str, lateness: &str, idle: &str) -> String {
    let path = dir.join("views.sql");
    std::fs::write(&path, view_sql(name, lateness, idle)).unwrap();
    path.to_str().unwrap().to_string()
}

/// `paystream query` with the views of `views`: the CSV rows, without the header.
pub fn query(data: &Path, views: &str, statement: &str) -> Vec<String> {
    let output = run_ok(data, &["query", "--format", "csv", "--views", views, statement]);
    String::from_utf8(output.stdout).unwrap().lines().skip(1).map(str::to_string).collect()
}

pub fn count(data: &Path, views: &str, statement: &str) -> usize {
    query(data, views, statement)[0].parse().unwrap()
}

/// Waits until the view `name` has windows and emits no more (its keeper read its
/// source); returns how many it has.
pub fn wait_settled(data: &Path, views: &str, name: &str) -> usize {
    let windows = || count(data, views, &format!("SELECT count(*) FROM {name}"));
    super::wait_until("the view emits windows", 120, 300, || windows() > 0);
    let mut before = windows();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3));
        let now = windows();
        if now == before {
            return now;
        }
        before = now;
    }
}

/// The view `name` against a batch query over the same decisions less its late rows:
/// the windows it closed must be equal, row for row, and no window emitted twice.
/// Returns (windows, late rows).
pub fn check_view(data: &Path, views: &str, name: &str) -> (usize, usize) {
    let decisions = dump(data, &topic("decisions")).len();
    let in_windows = count(data, views, &format!("SELECT coalesce(sum(decisions), 0) FROM {name}"));
    let late = count(data, views, &format!("SELECT count(*) FROM {name}_late"));
    let open = count(
        data,
        views,
        &format!(
            "SELECT count(*) FROM decisions WHERE date_bin(INTERVAL '1 hour', event_time) > \
             (SELECT coalesce(max(window_start), TIMESTAMP '1970-01-01T00:00:00Z') FROM {name}) \
             AND NOT EXISTS (SELECT 1 FROM {name}_late l WHERE l.source_partition = _partition \
             AND l.source_offset = _offset)"
        ),
    );
    assert_eq!(in_windows + late + open, decisions, "every decision is in one window, late, or still open");

    let batch = format!(
        "SELECT date_bin(INTERVAL '1 hour', event_time) AS window_start, outcome, \
         count(*) AS decisions, sum(amount_minor) AS amount_minor \
         FROM decisions d LEFT ANTI JOIN {name}_late l \
         ON l.source_partition = d._partition AND l.source_offset = d._offset \
         GROUP BY 1, 2"
    );
    let closed = format!("SELECT window_start, outcome, decisions, amount_minor FROM {name}");
    let differing = count(
        data,
        views,
        &format!(
            "SELECT count(*) FROM (({closed}) EXCEPT ALL (SELECT * FROM ({batch}) AS b WHERE window_start <= \
             (SELECT max(window_start) FROM {name})) UNION ALL (SELECT * FROM ({batch}) AS b WHERE window_start <= \
             (SELECT max(window_start) FROM {name})) EXCEPT ALL ({closed})) AS d"
        ),
    );
    assert_eq!(differing, 0, "the view's windows equal the batch query");
    let windows = count(data, views, &format!("SELECT count(*) FROM {name}"));
    let distinct =
        count(data, views, &format!("SELECT count(*) FROM (SELECT DISTINCT window_start, outcome FROM {name}) AS w"));
    assert_eq!(windows, distinct, "no window emitted twice");
    (windows, late)
}

/// `paystream views` in the background (with the views of the file `views`, and the
/// catalog's) with its metrics on a free port; returns it, the
/// metrics' address once it says where they are, and what it says on stderr from then on.
pub fn start_views(data: &Path, views: Option<&str>) -> (Running, String, Arc<Mutex<String>>) {
    let mut keeper = Running(
        paystream()
            .args(["views", "--metrics-addr", "127.0.0.1:0"])
            .args(views.map(|views| ["--views", views]).into_iter().flatten())
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn paystream views"),
    );
    let mut stderr = BufReader::new(keeper.stderr.take().unwrap());
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "paystream views exited before serving metrics");
        if let Some(url) = line.trim().strip_prefix("metrics: http://") {
            break url.trim_end_matches("/metrics").to_string();
        }
    };
    let said = Arc::new(Mutex::new(String::new()));
    let heard = said.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stderr.read_line(&mut line).is_ok_and(|read| read > 0) {
            heard.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    (keeper, address, said)
}

/// Whether the keeper whose metrics are at `address` says `view` runs (`1`) or stopped.
pub fn view_running(address: &str, view: &str) -> Option<bool> {
    let (status, exposition) = http(address, "GET", "/metrics", None, None);
    let prefix = format!("paystream_view_running{{view=\"{view}\"}} ");
    let value = exposition.lines().find_map(|line| line.strip_prefix(prefix.as_str()).map(str::to_string));
    (status == 200).then_some(value?.as_str() == "1")
}
