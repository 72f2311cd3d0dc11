//! Ephemeral state in Redis, in the original's layout: live statistics keyed by kernel or
//! agent id in logical DB 0 (JSON, with a TTL), rate-limit sorted sets keyed by access key
//! in DB 1.

use super::{BusError, Delivery, Ephemeral, Event};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::Script;
use std::time::Duration;
use tokio::sync::mpsc;

const STAT_DB: i64 = 0;
const RATE_LIMIT_DB: i64 = 1;
/// The original's event database (19.09).
const EVENT_DB: i64 = 4;
const EVENT_STREAM: &str = "events.stream";
/// Events kept in the stream (approximately) for consumers that were away.
const EVENT_STREAM_MAXLEN: usize = 100_000;
/// Longest wait for one command; Redis holds best-effort state (rate limits, live
/// statistics, events), so the API must not hang on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

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

/// A connection to one logical database that is made again after a timeout or a broken
/// connection. (The client's own reconnection can stay stuck on a dead connection when its
/// commands are abandoned at [`COMMAND_TIMEOUT`], as they are here.)
struct Conn {
    addr: String,
    password: Option<String>,
    db: i64,
    current: tokio::sync::Mutex<Option<ConnectionManager>>,
}

impl Conn {
    async fn new(addr: &str, password: Option<&str>, db: i64) -> Result<Self, BusError> {
        let first = connect_db(addr, password, db).await?;
        Ok(Conn {
            addr: addr.to_owned(),
            password: password.map(str::to_owned),
            db,
            current: tokio::sync::Mutex::new(Some(first)),
        })
    }

    /// The live connection, or a new one (one attempt at a time).
    async fn get(&self) -> Result<ConnectionManager, BusError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let c = connect_db(&self.addr, self.password.as_deref(), self.db).await?;
        tracing::info!("redis at {}: connected again (db {})", self.addr, self.db);
        *current = Some(c.clone());
        Ok(c)
    }

    /// Drops the connection, so the next command connects afresh. Never waits: when the
    /// lock is taken, a connection is being made already.
    fn reset(&self) {
        if let Ok(mut current) = self.current.try_lock() {
            *current = None;
        }
    }
}

pub struct RedisBus {
    rlim: Conn,
    stats: Conn,
    events: Conn,
    addr: String,
    password: Option<String>,
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

/// Whether an error means the connection is no good (so the next command reconnects).
fn broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl RedisBus {
    pub async fn connect(addr: &str, password: Option<&str>) -> Result<Self, BusError> {
        Ok(RedisBus {
            rlim: Conn::new(addr, password, RATE_LIMIT_DB).await?,
            stats: Conn::new(addr, password, STAT_DB).await?,
            events: Conn::new(addr, password, EVENT_DB).await?,
            addr: addr.to_owned(),
            password: password.map(str::to_owned),
            script: Script::new(RATE_LIMIT_LUA),
        })
    }

    /// One command on `conn`, waited for at most [`COMMAND_TIMEOUT`] (connecting again
    /// included): with Redis gone, callers get an error promptly instead of waiting on
    /// reconnection attempts. A timeout or a broken connection makes the next command
    /// connect afresh.
    async fn bounded<T, F, Fut>(&self, conn: &Conn, command: F) -> Result<T, BusError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let run = async {
            let c = conn.get().await.map_err(|e| (e, true))?;
            command(c).await.map_err(|e| {
                let b = broken(&e);
                (self.err(e), b)
            })
        };
        let run = async {
            match run.await {
                Ok(v) => Ok(v),
                Err((e, true)) => {
                    conn.reset();
                    Err(e)
                }
                Err((e, false)) => Err(e),
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
            Ok(result) => result,
            Err(_) => {
                conn.reset();
                Err(BusError::Redis {
                    addr: self.addr.clone(),
                    msg: format!("no answer within {} s", COMMAND_TIMEOUT.as_secs()),
                })
            }
        }
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
        // Scores in seconds with millisecond precision, as the original.
        let now = format!("{}.{:03}", now_ms / 1000, now_ms % 1000);
        let mut invocation = self.script.key(access_key);
        invocation.arg(now).arg(window_secs);
        self.bounded(&self.rlim, |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    async fn put_stat(
        &self,
        id: &str,
        stat: &serde_json::Value,
        ttl_secs: u64,
    ) -> Result<(), BusError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(id)
            .arg(stat.to_string())
            .arg("EX")
            .arg(ttl_secs.max(1));
        self.bounded(&self.stats, |mut c| async move {
            cmd.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn get_stat(&self, id: &str) -> Result<Option<serde_json::Value>, BusError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(id);
        let raw: Option<String> = self
            .bounded(
                &self.stats,
                |mut c| async move { cmd.query_async(&mut c).await },
            )
            .await?;
        // A value in another encoding (an original agent's msgpack) reads as "no live stats".
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    async fn publish(&self, event: &Event) -> Result<(), BusError> {
        let body = serde_json::to_string(event).map_err(|e| BusError::Redis {
            addr: self.addr.clone(),
            msg: e.to_string(),
        })?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(EVENT_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(EVENT_STREAM_MAXLEN)
            .arg("*")
            .arg("event")
            .arg(body);
        self.bounded(&self.events, |mut c| async move {
            cmd.query_async::<String>(&mut c).await
        })
        .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        group: &str,
        consumer: &str,
    ) -> Result<mpsc::Receiver<Delivery>, BusError> {
        let mut conn = self.events.get().await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(EVENT_STREAM)
            .arg(group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(self.err(e));
            }
        }
        // Blocking reads get a connection of their own, so they never delay other commands.
        let reader = Conn::new(&self.addr, self.password.as_deref(), EVENT_DB).await?;
        let (tx, rx) = mpsc::channel(1024);
        let (group, consumer, addr) = (group.to_owned(), consumer.to_owned(), self.addr.clone());
        tokio::spawn(async move {
            // First what this consumer took but never acknowledged, then new events.
            let mut cursor = "0".to_owned();
            loop {
                let mut read = redis::cmd("XREADGROUP");
                read.arg("GROUP")
                    .arg(&group)
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(100)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(EVENT_STREAM)
                    .arg(&cursor);
                // Stop reading as soon as nobody listens, so a gone consumer does not take
                // events from the live ones of its group.
                let mut conn = match reader.get().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("redis at {addr}: reading events: {e}");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = tx.closed() => return,
                        }
                    }
                };
                // The read blocks for a second at most; a reply much later than that means
                // a dead connection, which is then made again.
                let bounded = tokio::time::timeout(
                    Duration::from_millis(1000) + COMMAND_TIMEOUT,
                    read.query_async(&mut conn),
                );
                let reply: redis::RedisResult<redis::streams::StreamReadReply> = tokio::select! {
                    r = bounded => match r {
                        Ok(r) => r,
                        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer to a blocking read",
                        ))),
                    },
                    _ = tx.closed() => return,
                };
                let reply = match reply {
                    Ok(r) => r,
                    Err(e) => {
                        if tx.is_closed() {
                            return;
                        }
                        if e.code() == Some("NOGROUP") {
                            // Redis came back empty (restarted without persistence):
                            // the stream and the group are made again, and everything
                            // published since is read.
                            let made: redis::RedisResult<()> = redis::cmd("XGROUP")
                                .arg("CREATE")
                                .arg(EVENT_STREAM)
                                .arg(&group)
                                .arg("0")
                                .arg("MKSTREAM")
                                .query_async(&mut conn)
                                .await;
                            match made {
                                Err(e) if e.code() != Some("BUSYGROUP") => {
                                    tracing::warn!(
                                        "redis at {addr}: recreating the event group: {e}"
                                    )
                                }
                                _ => {
                                    tracing::info!(
                                        "redis at {addr}: the event group was recreated"
                                    );
                                    cursor = "0".to_owned();
                                    continue;
                                }
                            }
                        }
                        if broken(&e) {
                            reader.reset();
                        }
                        tracing::warn!("redis at {addr}: reading events: {e}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let ids: Vec<_> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
                // While replaying the backlog, move past what was just read; once it is
                // empty, switch to new events.
                if cursor != ">" {
                    cursor = match ids.last() {
                        Some(last) => last.id.clone(),
                        None => ">".to_owned(),
                    };
                }
                for entry in ids {
                    let body: Option<String> = entry.get("event");
                    let Some(event) = body.and_then(|b| serde_json::from_str::<Event>(&b).ok())
                    else {
                        continue;
                    };
                    if tx
                        .send(Delivery {
                            id: entry.id,
                            event,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn ack(&self, group: &str, id: &str) -> Result<(), BusError> {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(EVENT_STREAM).arg(group).arg(id);
        self.bounded(&self.events, |mut c| async move {
            cmd.query_async::<i64>(&mut c).await
        })
        .await?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("redis at {}", self.addr)
    }
}
