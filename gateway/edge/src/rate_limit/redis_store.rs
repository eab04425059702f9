//! GCRA in Redis: one Lua script per check (atomic), on Redis's own clock (`TIME`), so
//! replicas with skewed clocks still share one limit. Keys expire when their limit is
//! whole again, so memory is bounded by the active keys. Keys are Cluster-ready (one
//! key per script call).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::REDIS_CALL_TIMEOUT_MS;
use super::gcra::{Gcra, Verdict};

/// KEYS[1] = the key; ARGV = emission ms, window ms. Returns {allowed, remaining, reset}.
const GCRA_SCRIPT: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local emission = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
if new_tat - now > window then
  return {0, 0, new_tat - now - window}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((window - (new_tat - now)) / emission), new_tat - now}
"#;

pub struct RedisGcra {
    client: redis::Client,
    prefix: String,
    connection: Mutex<Option<MultiplexedConnection>>,
    script: redis::Script,
}

impl RedisGcra {
    /// A limiter on `url`; connects lazily (and again after a failure), so a gateway
    /// starts while Redis is down.
    pub fn new(url: &str, prefix: &str) -> Result<RedisGcra, redis::RedisError> {
        Ok(RedisGcra {
            client: redis::Client::open(url)?,
            prefix: prefix.to_string(),
            connection: Mutex::new(None),
            script: redis::Script::new(GCRA_SCRIPT),
        })
    }

    /// `Err` when Redis does not answer within [`REDIS_CALL_TIMEOUT_MS`].
    pub async fn check(&self, key: &str, policy: Gcra) -> Result<Verdict, String> {
        let timeout = Duration::from_millis(REDIS_CALL_TIMEOUT_MS);
        let call = async {
            let mut connection = {
                let mut slot = self.connection.lock().await;
                match slot.as_ref() {
                    Some(connection) => connection.clone(),
                    None => {
                        let connection =
                            self.client.get_multiplexed_async_connection().await.map_err(|error| error.to_string())?;
                        *slot = Some(connection.clone());
                        connection
                    }
                }
            };
            let reply: (i64, i64, i64) = self
                .script
                .key(format!("{}:{key}", self.prefix))
                .arg(policy.emission_ms)
                .arg(policy.window_ms())
                .invoke_async(&mut connection)
                .await
                .map_err(|error| error.to_string())?;
            Ok::<_, String>(Verdict { allowed: reply.0 == 1, remaining: reply.1.max(0) as u32, reset_ms: reply.2 })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(verdict)) => Ok(verdict),
            Ok(Err(error)) => {
                *self.connection.lock().await = None;
                Err(error)
            }
            Err(_) => {
                *self.connection.lock().await = None;
                Err(format!("no answer within {REDIS_CALL_TIMEOUT_MS} ms"))
            }
        }
    }
}
