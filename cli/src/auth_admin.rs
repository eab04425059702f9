//! `paystream auth`: what an operator does to the auth service outside the API: grant
//! roles (the first admin has no one to ask) and rotate the signing key.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use paystream_auth::service::system_clock;
use paystream_auth::{AuthStore, Keyring};
use paystream_http::Role;

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Set an account's roles (e.g. make the first admin). Its earlier tokens stop working.
    SetRoles(SetRolesArgs),
    /// Add a new signing key to the key file; the old one verifies until its tokens
    /// expire. Restart the services (or roll the Deployment) to pick it up.
    RotateKey(RotateKeyArgs),
}

#[derive(Args)]
pub struct StoreArgs {
    /// The data directory whose embedded store (`services/auth.sqlite`) to use.
    #[arg(long, env = "PAYSTREAM_DATA_DIR", default_value = "paystream-data")]
    data_dir: PathBuf,
    /// Use the auth schema in this PostgreSQL database instead.
    #[arg(long, env = "PAYSTREAM_POSTGRES_URL")]
    postgres_url: Option<String>,
    #[arg(long, env = "PAYSTREAM_AUTH_SCHEMA", default_value = "paystream_auth")]
    auth_schema: String,
}

#[derive(Args)]
pub struct SetRolesArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long)]
    email: String,
    /// customer, merchant, support_agent or admin; repeatable.
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// The merchant the account acts for (required with role merchant).
    #[arg(long)]
    merchant_id: Option<String>,
}

#[derive(Args)]
pub struct RotateKeyArgs {
    /// The key file (default: `<data-dir>/services/auth-keys.json`).
    #[arg(long, env = "PAYSTREAM_AUTH_KEY_FILE")]
    auth_key_file: Option<PathBuf>,
    #[arg(long, env = "PAYSTREAM_DATA_DIR", default_value = "paystream-data")]
    data_dir: PathBuf,
}

pub fn auth(command: AuthCommand) -> Result<()> {
    match command {
        AuthCommand::SetRoles(args) => set_roles(args),
        AuthCommand::RotateKey(args) => rotate_key(args),
    }
}

fn set_roles(args: SetRolesArgs) -> Result<()> {
    let roles = args
        .roles
        .iter()
        .map(|text| Role::parse(text).with_context(|| format!("unknown role {text:?}")))
        .collect::<Result<Vec<_>>>()?;
    if roles.contains(&Role::Merchant) != args.merchant_id.is_some() {
        bail!("--merchant-id is required with role merchant, and only then");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = match &args.store.postgres_url {
            Some(url) => AuthStore::connect(url, &args.store.auth_schema).await,
            None => AuthStore::open_embedded(&args.store.data_dir.join("services")).await,
        }
        .context("open the auth store")?;
        let email = paystream_auth::model::normalize_email(&args.email)?;
        let account = store.account_by_email(&email).await?.with_context(|| format!("no account {email}"))?;
        store.set_roles(&account.user_id, &roles, args.merchant_id.as_deref()).await?;
        println!("{} ({}): {}", email, account.user_id, args.roles.join(","));
        store.close().await;
        Ok(())
    })
}

fn rotate_key(args: RotateKeyArgs) -> Result<()> {
    let path = args.auth_key_file.unwrap_or_else(|| args.data_dir.join("services").join("auth-keys.json"));
    let mut keys = Keyring::load(&path).with_context(|| format!("load {}", path.display()))?;
    let kid = keys.rotate((system_clock())())?;
    keys.save(&path)?;
    println!("{kid}");
    Ok(())
}
