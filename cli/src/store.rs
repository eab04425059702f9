//! `paystream store`: the record stores from the command line — PostgreSQL (create or
//! migrate the record store's and the users' schemas, read an account's balance or a
//! payment's decision, manage users) and ScyllaDB (create its keyspace and tables, read
//! an account's payment history).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use paystream_storage::history::HistoryStore;
use paystream_storage::records::RecordStore;
use paystream_storage::users::{KycStatus, User, UserStore};
use paystream_storage_postgres::{Blocking, PostgresRecordStore, PostgresUserStore};
use paystream_storage_scylla::{ConsistencyLevel, ScyllaConfig, ScyllaStore};

#[derive(Args)]
pub struct StoreArgs {
    /// PostgreSQL URL, e.g. postgres://user@host:5432/db (every command but scylla-*).
    #[arg(long, env = "PAYSTREAM_POSTGRES_URL", global = true)]
    postgres_url: Option<String>,
    #[arg(long, env = "PAYSTREAM_POSTGRES_SCHEMA", default_value = "paystream", global = true)]
    postgres_schema: String,
    /// Schema of the users (user-* commands), apart from the record store's.
    #[arg(long, env = "PAYSTREAM_USERS_SCHEMA", default_value = "paystream_users", global = true)]
    users_schema: String,
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Create the record store's and the users' schemas if missing and apply pending
    /// migrations (run does this for the record store).
    Migrate,
    /// An account's balance (debits − credits) in one currency, minor units.
    Balance {
        account_id: String,
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
    /// A payment's stored decision, as JSON.
    Decision { payment_id: String },
    /// Adds a user (KYC pending); an id or e-mail already taken is refused.
    UserAdd { user_id: String, email: String, display_name: String },
    /// A user, as JSON: by id, or by e-mail with --email.
    User {
        user_id_or_email: String,
        #[arg(long)]
        email: bool,
    },
    /// Sets a user's KYC state: pending, verified or rejected.
    UserKyc { user_id: String, status: String },
    /// Creates the ScyllaDB keyspace and tables if missing (idempotent).
    ScyllaMigrate(ScyllaArgs),
    /// An account's latest payments in ScyllaDB, newest first, as JSON lines.
    ScyllaHistory {
        account_id: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        scylla: ScyllaArgs,
    },
}

#[derive(Args)]
struct ScyllaArgs {
    /// ScyllaDB/Cassandra nodes, host:port, comma-separated.
    #[arg(long, env = "SCYLLA_NODES")]
    scylla_nodes: String,
    #[arg(long, env = "PAYSTREAM_SCYLLA_KEYSPACE", default_value = "paystream")]
    scylla_keyspace: String,
    /// Replication factor of the keyspace (NetworkTopologyStrategy), when created.
    #[arg(long, default_value_t = 1)]
    scylla_replication_factor: u32,
    /// one, local_one, quorum, local_quorum or all.
    #[arg(long, env = "PAYSTREAM_SCYLLA_CONSISTENCY", default_value = "local_quorum")]
    scylla_consistency: String,
}

impl ScyllaArgs {
    fn connect(&self) -> Result<paystream_storage_scylla::Blocking<ScyllaStore>> {
        let mut config = ScyllaConfig::new(&self.scylla_nodes, &self.scylla_keyspace)?;
        config.replication_factor = self.scylla_replication_factor;
        config.consistency = ConsistencyLevel::parse(&self.scylla_consistency)?;
        paystream_storage_scylla::Blocking::<ScyllaStore>::connect(config)
            .with_context(|| format!("ScyllaDB at {}", self.scylla_nodes))
    }
}

pub fn store(args: StoreArgs) -> Result<()> {
    match &args.command {
        StoreCommand::ScyllaMigrate(scylla) => {
            scylla.connect()?.migrate()?;
            println!("keyspace {} is migrated", scylla.scylla_keyspace);
            return Ok(());
        }
        StoreCommand::ScyllaHistory { account_id, limit, scylla } => {
            for row in scylla.connect()?.history(account_id, *limit)? {
                println!(
                    "{}",
                    serde_json::json!({
                        "account_id": row.account_id, "event_time_ms": row.event_time_ms,
                        "payment_id": row.payment_id, "type": row.kind, "counterparty": row.counterparty,
                        "amount_minor": row.amount_minor, "currency": row.currency, "outcome": row.outcome,
                    })
                );
            }
            return Ok(());
        }
        _ => {}
    }
    let url = args.postgres_url.as_deref().context("--postgres-url (or PAYSTREAM_POSTGRES_URL) is required")?;
    let connect_users = || {
        Blocking::<PostgresUserStore>::connect(url, &args.users_schema)
            .with_context(|| format!("users: PostgreSQL schema {}", args.users_schema))
    };
    match args.command {
        StoreCommand::UserAdd { .. } | StoreCommand::User { .. } | StoreCommand::UserKyc { .. } => {
            return users(&mut connect_users()?, args.command, &args.users_schema);
        }
        _ => {}
    }
    let mut store = Blocking::<PostgresRecordStore>::connect(url, &args.postgres_schema)
        .with_context(|| format!("record store: PostgreSQL schema {}", args.postgres_schema))?;
    match args.command {
        StoreCommand::ScyllaMigrate(_) | StoreCommand::ScyllaHistory { .. } => unreachable!("handled above"),
        StoreCommand::UserAdd { .. } | StoreCommand::User { .. } | StoreCommand::UserKyc { .. } => {
            unreachable!("handled above")
        }
        StoreCommand::Migrate => {
            let totals = store.totals()?;
            println!(
                "schema {} is migrated: {} decisions, {} postings",
                args.postgres_schema, totals.decisions, totals.postings
            );
            connect_users()?;
            println!("schema {} is migrated: users", args.users_schema);
        }
        StoreCommand::Balance { account_id, currency } => {
            println!("{}", store.balance_minor(&account_id, &currency)?);
        }
        StoreCommand::Decision { payment_id } => match store.decision(&payment_id)? {
            Some(d) => println!(
                "{}",
                serde_json::json!({
                    "payment_id": d.payment_id,
                    "payer_account_id": d.payer_account_id,
                    "merchant_id": d.merchant_id,
                    "amount_minor": d.amount_minor,
                    "currency": d.currency,
                    "event_time": paystream_domain::time::format_rfc3339_ms(d.event_time_ms),
                    "outcome": d.outcome,
                    "score": d.score,
                    "reasons": d.reasons,
                    "model_version": d.model_version,
                })
            ),
            None => anyhow::bail!("no decision for payment {payment_id:?} in schema {}", args.postgres_schema),
        },
    }
    Ok(())
}

/// The user-* commands, on the users' schema.
fn users(store: &mut dyn UserStore, command: StoreCommand, users_schema: &str) -> Result<()> {
    match command {
        StoreCommand::UserAdd { user_id, email, display_name } => {
            let user = User::new(&user_id, &email, &display_name, paystream_pipeline::clock::now_ms())?;
            store.create_user(&user)?;
            println!("{}", user_json(&user));
        }
        StoreCommand::User { user_id_or_email, email } => {
            let user = if email { store.user_by_email(&user_id_or_email)? } else { store.user(&user_id_or_email)? };
            match user {
                Some(user) => println!("{}", user_json(&user)),
                None => anyhow::bail!("no user {user_id_or_email:?} in schema {users_schema}"),
            }
        }
        StoreCommand::UserKyc { user_id, status } => {
            if !store.set_kyc_status(&user_id, KycStatus::parse(&status)?)? {
                anyhow::bail!("no user {user_id:?} in schema {users_schema}");
            }
        }
        _ => unreachable!("only user commands come here"),
    }
    Ok(())
}

fn user_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "user_id": user.user_id,
        "email": user.email,
        "display_name": user.display_name,
        "kyc_status": user.kyc_status.as_str(),
        "created_at": paystream_domain::time::format_rfc3339_ms(user.created_at_ms),
    })
}
