//! A continuous view of decisions per outcome and hour, and the check that holds it to a
//! batch query over the same decisions.

use std::path::Path;

use super::{dump, run_ok, topic};

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
