// Command grafana-pgx replays what Grafana's PostgreSQL data source sends, with the
// driver Grafana uses (pgx v5), against a running `paystream sql`:
//
//   - the health check (pgx Ping: a simple-protocol "-- ping");
//   - panel queries over the simple protocol (PgConn().Exec), with Grafana's macros
//     expanded as its macro engine writes them: $__timeFilter, $__timeGroupAlias,
//     $__timeFrom/$__timeTo, $__unixEpochFilter;
//   - the schema browser over the extended protocol with $1/$2 parameters: schemas,
//     tables, columns (with udt_name, numeric_precision and numeric_scale) and the
//     distinct values of a column.
//
// Usage: grafana-pgx HOST:PORT PASSWORD DECISIONS DECLINES
// (DECISIONS and DECLINES: the counts `paystream log dump decisions` shows). Exits 1 at
// the first wrong answer.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

func fail(format string, args ...any) {
	fmt.Printf("FAILED "+format+"\n", args...)
	os.Exit(1)
}

func ok(format string, args ...any) { fmt.Printf("ok "+format+"\n", args...) }

// simple runs sql as a Grafana panel does: one simple-protocol Exec, text results.
func simple(ctx context.Context, conn *pgx.Conn, sql string) [][]string {
	results, err := conn.PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		fail("%s: %v", sql, err)
	}
	var rows [][]string
	for _, result := range results {
		if result.Err != nil {
			fail("%s: %v", sql, result.Err)
		}
		for _, row := range result.Rows {
			var texts []string
			for _, value := range row {
				texts = append(texts, string(value))
			}
			rows = append(rows, texts)
		}
	}
	return rows
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: grafana-pgx HOST:PORT PASSWORD DECISIONS DECLINES")
	}
	address, password := os.Args[1], os.Args[2]
	decisions, _ := strconv.Atoi(os.Args[3])
	declines, _ := strconv.Atoi(os.Args[4])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	config, err := pgx.ParseConfig(fmt.Sprintf("postgres://analyst@%s/paystream?sslmode=disable", address))
	if err != nil {
		fail("config: %v", err)
	}
	config.Password = password
	conn, err := pgx.ConnectConfig(ctx, config)
	if err != nil {
		fail("connect: %v", err)
	}
	defer conn.Close(ctx)

	// Health check: "Save & test".
	if err := conn.Ping(ctx); err != nil {
		fail("ping: %v", err)
	}
	ok("health check (Ping)")

	// A dashboard's time range covering the whole log: 2018 (the simulator's year).
	from := time.Date(2018, 1, 1, 0, 0, 0, 0, time.UTC)
	to := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
	timeFilter := func(column string) string {
		return fmt.Sprintf("%s BETWEEN '%s' AND '%s'", column, from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	}
	timeGroupAlias := func(column string, seconds int) string {
		return fmt.Sprintf("floor(extract(epoch from %s)/%d)*%d AS \"time\"", column, seconds, seconds)
	}

	// Time series: declines per day ($__timeGroupAlias(event_time, 1d), $__timeFilter).
	rows := simple(ctx, conn, fmt.Sprintf(
		"SELECT %s, count(*) AS declines FROM decisions WHERE %s AND outcome = 'decline' GROUP BY 1 ORDER BY 1",
		timeGroupAlias("event_time", 86400), timeFilter("event_time")))
	total := 0
	for _, row := range rows {
		n, err := strconv.Atoi(row[1])
		if err != nil {
			fail("declines per day: %v in %v", err, row)
		}
		if _, err := strconv.ParseFloat(row[0], 64); err != nil {
			fail("declines per day: time %q is not epoch seconds", row[0])
		}
		total += n
	}
	if total != declines {
		fail("declines per day sum to %d, the log has %d", total, declines)
	}
	ok("time series: declines per day over %d days sum to %d", len(rows), total)

	// Table: outcomes in the range ($__timeFrom / $__timeTo).
	rows = simple(ctx, conn, fmt.Sprintf(
		"SELECT outcome, count(*) AS n FROM decisions WHERE event_time >= '%s' AND event_time < '%s' GROUP BY outcome ORDER BY n DESC",
		from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano)))
	total = 0
	for _, row := range rows {
		n, _ := strconv.Atoi(row[1])
		total += n
	}
	if total != decisions {
		fail("outcomes sum to %d, the log has %d", total, decisions)
	}
	ok("table: %d outcomes, %d decisions", len(rows), total)

	// $__unixEpochFilter on an epoch column.
	rows = simple(ctx, conn, fmt.Sprintf(
		"SELECT count(*) FROM (SELECT CAST(extract(epoch from event_time) AS BIGINT) AS t FROM decisions) AS e WHERE t >= %d AND t <= %d",
		from.Unix(), to.Unix()))
	if rows[0][0] != strconv.Itoa(decisions) {
		fail("$__unixEpochFilter: %v, want %d", rows, decisions)
	}
	ok("$__unixEpochFilter: %s", rows[0][0])

	// Schema browser (extended protocol, $1/$2).
	var schemas []string
	schemaRows, err := conn.Query(ctx, `SELECT schema_name FROM information_schema.schemata
		 WHERE schema_name NOT LIKE 'pg_%' AND schema_name != 'information_schema'
		 ORDER BY schema_name`)
	if err != nil {
		fail("schemas: %v", err)
	}
	for schemaRows.Next() {
		var name string
		if err := schemaRows.Scan(&name); err != nil {
			fail("schemas: %v", err)
		}
		schemas = append(schemas, name)
	}
	if schemaRows.Err() != nil || !contains(schemas, "public") {
		fail("schemas: %v %v", schemas, schemaRows.Err())
	}
	ok("schemas: %v", schemas)

	var tables []string
	tableRows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables
		 WHERE table_schema = $1 AND table_type IN ('BASE TABLE', 'VIEW')
		 ORDER BY table_name`, "public")
	if err != nil {
		fail("tables: %v", err)
	}
	for tableRows.Next() {
		var name string
		if err := tableRows.Scan(&name); err != nil {
			fail("tables: %v", err)
		}
		tables = append(tables, name)
	}
	for _, want := range []string{"decisions", "ledger", "payments", "balances"} {
		if !contains(tables, want) {
			fail("tables: %v lacks %s (%v)", tables, want, tableRows.Err())
		}
	}
	ok("tables: %v", tables)

	columnRows, err := conn.Query(ctx, `SELECT column_name, data_type, udt_name, numeric_precision, numeric_scale
		 FROM information_schema.columns
		 WHERE table_schema = $1 AND table_name = $2
		 ORDER BY ordinal_position`, "public", "decisions")
	if err != nil {
		fail("columns: %v", err)
	}
	types := map[string]string{}
	var order []string
	for columnRows.Next() {
		var name, dataType, udtName string
		var precision, scale *int
		if err := columnRows.Scan(&name, &dataType, &udtName, &precision, &scale); err != nil {
			fail("columns: %v", err)
		}
		types[name] = udtName
		order = append(order, name)
	}
	if columnRows.Err() != nil || order[0] != "payment_id" || types["amount_minor"] != "int8" ||
		types["event_time"] != "timestamptz" || types["outcome"] != "text" || types["_partition"] == "" {
		fail("columns: %v %v", types, columnRows.Err())
	}
	ok("columns of decisions: %d, amount_minor %s, event_time %s", len(order), types["amount_minor"], types["event_time"])

	// Distinct values of a column, as the query builder asks for them.
	valueRows, err := conn.Query(ctx,
		`SELECT 'outcome' AS col_name, "outcome"::text AS val FROM (SELECT DISTINCT "outcome" FROM "public"."decisions" WHERE "outcome" IS NOT NULL ORDER BY "outcome" LIMIT 100) sub_0`)
	if err != nil {
		fail("column values: %v", err)
	}
	var values []string
	for valueRows.Next() {
		var column, value string
		if err := valueRows.Scan(&column, &value); err != nil {
			fail("column values: %v", err)
		}
		values = append(values, value)
	}
	if valueRows.Err() != nil || !contains(values, "decline") {
		fail("column values: %v %v", values, valueRows.Err())
	}
	ok("column values of outcome: %s", strings.Join(values, ", "))
	fmt.Println("all Grafana query shapes passed")
}

func contains(list []string, want string) bool {
	for _, item := range list {
		if item == want {
			return true
		}
	}
	return false
}
