//! Ephemeral state in Redis, compatible with the original's layout: rate-limit sorted sets
//! keyed by access key in logical DB 1.

use super::{BusError, Ephemeral};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use std::time::Duration;

const RATE_LIMIT_DB: i64 = 1;

/// The original's rolling-window script: a global request id keeps members unique, old
/// entries are trimmed, the set expires with the window, and the count is returned.
const RATE_LIMIT_LUA: &str = r#"
local access_key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local request_id = redis.call('INCR', '__request_id')
if request_id >= 1e12 then
    redis.call('SET', '__request_id', 1)
end
if redis.call('EXISTS', access_key) == 1 then
    redis.call('ZREMRANGEBYSCORE', access_key, 0, now - window)
end
redis.call('ZADD', access_key, now, tostring(request_id))
redis.call('EXPIRE', access_key, window)
return redis.call('ZCARD', access_key)
"#;

pub struct RedisBus {
    conn: ConnectionManager,
    addr: String,
    script: Script,
}

impl RedisBus {
    pub async fn connect(addr: &str, password: Option<&str>) -> Result<Self, BusError> {
        let err = |e: redis::RedisError| BusError::Redis {
            addr: addr.to_owned(),
            msg: e.to_string(),
        };
        let (host, port) = crate::config::parse_host_port(addr).ok_or_else(|| BusError::Redis {
            addr: addr.to_owned(),
            msg: "not host:port".into(),
        })?;
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host, port),
            redis: redis::RedisConnectionInfo {
                db: RATE_LIMIT_DB,
                password: password.map(str::to_owned),
                ..Default::default()
            },
        };
        let client = redis::Client::open(info).map_err(err)?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(3))
            .set_response_timeout(Duration::from_secs(3))
            .set_number_of_retries(2);
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client, cfg),
        )
        .await
        .map_err(|_| BusError::Redis {
            addr: addr.to_owned(),
            msg: "connection timed out".into(),
        })?
        .map_err(err)?;
        Ok(RedisBus {
            conn,
            addr: addr.to_owned(),
            script: Script::new(RATE_LIMIT_LUA),
        })
    }
}

#[async_trait]
impl Ephemeral for RedisBus {
    async fn rate_limit_hit(
        &self,
        access_key: &str,
        now_ms: u64,
        window_secs: u64,
    ) -> Result<u64, BusError> {
        let mut conn = self.conn.clone();
        // Scores in seconds with millisecond precision, as the original.
        let now = format!("{}.{:03}", now_ms / 1000, now_ms % 1000);
        self.script
            .key(access_key)
            .arg(now)
            .arg(window_secs)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BusError::Redis {
                addr: self.addr.clone(),
                msg: e.to_string(),
            })
    }

    fn describe(&self) -> String {
        format!("redis at {}", self.addr)
    }
}
