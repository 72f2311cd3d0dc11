//! Ephemeral state in Redis, in the original's layout: live statistics keyed by kernel or
//! agent id in logical DB 0 (JSON, with a TTL), rate-limit sorted sets keyed by access key
//! in DB 1.

use super::{BusError, Ephemeral};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use std::time::Duration;

const STAT_DB: i64 = 0;
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
    rlim: ConnectionManager,
    stats: ConnectionManager,
    addr: String,
    script: Script,
}

/// A reconnecting connection to one logical database.
async fn connect_db(
    addr: &str,
    password: Option<&str>,
    db: i64,
) -> Result<ConnectionManager, BusError> {
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
            db,
            password: password.map(str::to_owned),
            ..Default::default()
        },
    };
    let client = redis::Client::open(info).map_err(err)?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(3))
        .set_response_timeout(Duration::from_secs(3))
        .set_number_of_retries(2);
    tokio::time::timeout(
        Duration::from_secs(5),
        ConnectionManager::new_with_config(client, cfg),
    )
    .await
    .map_err(|_| BusError::Redis {
        addr: addr.to_owned(),
        msg: "connection timed out".into(),
    })?
    .map_err(err)
}

impl RedisBus {
    pub async fn connect(addr: &str, password: Option<&str>) -> Result<Self, BusError> {
        Ok(RedisBus {
            rlim: connect_db(addr, password, RATE_LIMIT_DB).await?,
            stats: connect_db(addr, password, STAT_DB).await?,
            addr: addr.to_owned(),
            script: Script::new(RATE_LIMIT_LUA),
        })
    }

    fn err(&self, e: redis::RedisError) -> BusError {
        BusError::Redis {
            addr: self.addr.clone(),
            msg: e.to_string(),
        }
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
        let mut conn = self.rlim.clone();
        // Scores in seconds with millisecond precision, as the original.
        let now = format!("{}.{:03}", now_ms / 1000, now_ms % 1000);
        self.script
            .key(access_key)
            .arg(now)
            .arg(window_secs)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn put_stat(
        &self,
        id: &str,
        stat: &serde_json::Value,
        ttl_secs: u64,
    ) -> Result<(), BusError> {
        let mut conn = self.stats.clone();
        redis::cmd("SET")
            .arg(id)
            .arg(stat.to_string())
            .arg("EX")
            .arg(ttl_secs.max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    async fn get_stat(&self, id: &str) -> Result<Option<serde_json::Value>, BusError> {
        let mut conn = self.stats.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(id)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        // A value in another encoding (an original agent's msgpack) reads as "no live stats".
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    fn describe(&self) -> String {
        format!("redis at {}", self.addr)
    }
}
