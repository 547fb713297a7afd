//! The Redis online store.
//!
//! One Redis string per (view version, entity): key `q:{project}:{view}:{version}:` +
//! the entity key bytes, value the compact row encoding of [`crate::codec`]. Writes run
//! a Lua script that keeps the newer value by comparing the 16-byte (event time, created)
//! header, and set an expiry one TTL after the value falls out of max age (and at least
//! one TTL after it was written), so lookups in between still report `OUTSIDE_MAX_AGE`
//! and dead entities do not accumulate. Scripts for many keys go out pipelined; a lookup
//! of any number of entities and views is one `MGET`.
//!
//! The connection is a `ConnectionManager`: it reconnects by itself after the server
//! restarts. Connect and command timeouts are bounded, so an unreachable server is an
//! error naming the URL, never a hang.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind as RedisErrorKind, RedisError};

use quiver_core::config::redact_url;

use crate::embedded::{decode_values, raw_values};
use crate::store::{
    BlobWrite, Expect, OnlineRows, OnlineStore, ViewRead, ViewRef, ViewValues, WriteStats,
};
use crate::{Error, Result};

/// Keeps the value whose (event time, created) header is not older; sets its expiry.
/// KEYS: the keys. ARGV: for each key, the value and its time to live in ms (0: none).
const WRITE_SCRIPT: &str = r"
local function not_older(new, cur)
  for i = 1, 16 do
    local a, b = string.byte(new, i), string.byte(cur, i)
    if a ~= b then return a > b end
  end
  return true
end
local written = 0
for i = 1, #KEYS do
  local value = ARGV[2 * i - 1]
  local expire_in = tonumber(ARGV[2 * i])
  local current = redis.call('GET', KEYS[i])
  if (not current) or not_older(value, current) then
    if expire_in > 0 then
      redis.call('SET', KEYS[i], value, 'PX', expire_in)
    else
      redis.call('SET', KEYS[i], value)
    end
    written = written + 1
  end
end
return written
";

/// Compare-and-set of one entity blob (aggregation views). KEYS[1]: the key. ARGV: the
/// expected 8-byte version (`''` anything, `'-'` absent), the new value (`''` deletes),
/// its time to live in ms (`0`: none). Returns 1 when written, 0 when the stored version
/// was not the expected one.
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
local expect = ARGV[1]
if expect == '-' then
  if current then return 0 end
elseif expect ~= '' then
  if (not current) or string.sub(current, 1, 8) ~= expect then return 0 end
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
";

/// Keys per script call, and script calls per pipelined round trip.
const KEYS_PER_CALL: usize = 500;
const CALLS_PER_ROUND_TRIP: usize = 32;

/// One call of the write script: its keys and its arguments.
type ScriptCall = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Connection settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
        }
    }
}

/// The Redis online store.
#[derive(Clone)]
pub struct RedisStore {
    /// The URL without its password, for messages.
    url: String,
    connection: ConnectionManager,
    script: redis::Script,
    cas: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish()
    }
}

impl RedisStore {
    /// Connects to Redis; fails with the URL in the message when it cannot.
    pub async fn connect(options: &RedisOptions) -> Result<Self> {
        let url = redact_url(&options.url);
        let fail = |e: RedisError| Error::Redis {
            url: url.clone(),
            message: e.to_string(),
        };
        let client = Client::open(options.url.as_str()).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connect = ConnectionManager::new_with_config(client, config);
        let connection = tokio::time::timeout(options.connect_timeout * 3, connect)
            .await
            .map_err(|_| Error::Redis {
                url: url.clone(),
                message: format!("no answer within {:?}", options.connect_timeout * 3),
            })?
            .map_err(fail)?;
        Ok(RedisStore {
            url,
            connection,
            script: redis::Script::new(WRITE_SCRIPT),
            cas: redis::Script::new(CAS_SCRIPT),
        })
    }

    fn error(&self, e: RedisError) -> Error {
        Error::Redis {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }

    async fn run_pipeline(&self, calls: &[ScriptCall]) -> Result<u64> {
        let counts = self.run_script(&self.script, WRITE_SCRIPT, calls).await?;
        Ok(counts.iter().sum())
    }

    /// Runs `script` once per call in one pipelined round trip; returns each call's
    /// answer. Loads the script again when the server lost it (a restart).
    async fn run_script(
        &self,
        script: &redis::Script,
        source: &str,
        calls: &[ScriptCall],
    ) -> Result<Vec<u64>> {
        let build = || {
            let mut pipe = redis::pipe();
            for (keys, args) in calls {
                pipe.cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(keys.len())
                    .arg(keys)
                    .arg(args);
            }
            pipe
        };
        let mut connection = self.connection.clone();
        let result: Result<Vec<u64>, RedisError> = build().query_async(&mut connection).await;
        match result {
            Ok(counts) => Ok(counts),
            Err(e) if e.kind() == RedisErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(source)
                    .query_async::<String>(&mut connection)
                    .await
                    .map_err(|e| self.error(e))?;
                build()
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| self.error(e))
            }
            Err(e) => Err(self.error(e)),
        }
    }
}

#[async_trait]
impl OnlineStore for RedisStore {
    async fn write(&self, view: &ViewRef, rows: &OnlineRows, now: i64) -> Result<WriteStats> {
        let prefix = view.key_prefix();
        let mut stats = WriteStats::default();
        let mut calls: Vec<ScriptCall> = Vec::new();
        let mut keys = Vec::with_capacity(KEYS_PER_CALL);
        let mut args = Vec::with_capacity(2 * KEYS_PER_CALL);
        for row in 0..rows.len() {
            let Some(entity) = &rows.keys[row] else {
                continue;
            };
            let mut key = prefix.clone();
            key.extend_from_slice(entity);
            let value = rows.encode_value(row)?;
            // Relative to the writer's clock, so an injected clock stays consistent.
            let expire_ms = match view.ttl_micros {
                Some(ttl) => {
                    let out_of_age_in = rows.event_ts[row]
                        .saturating_add(ttl)
                        .saturating_sub(now)
                        .max(0);
                    (out_of_age_in.saturating_add(ttl) / 1_000).max(1)
                }
                None => 0,
            };
            keys.push(key);
            args.push(value);
            args.push(expire_ms.to_string().into_bytes());
            stats.rows += 1;
            if keys.len() == KEYS_PER_CALL {
                calls.push((std::mem::take(&mut keys), std::mem::take(&mut args)));
                if calls.len() == CALLS_PER_ROUND_TRIP {
                    stats.written += self.run_pipeline(&calls).await?;
                    calls.clear();
                }
            }
        }
        if !keys.is_empty() {
            calls.push((keys, args));
        }
        if !calls.is_empty() {
            stats.written += self.run_pipeline(&calls).await?;
        }
        Ok(stats)
    }

    /// Redis expires keys by its own clock, so `now` is not needed here.
    async fn read(&self, reads: &[ViewRead<'_>], _now: i64) -> Result<Vec<ViewValues>> {
        // One MGET for every (view, entity) pair with a key.
        let mut command = redis::cmd("MGET");
        let mut asked = 0;
        for read in reads {
            let prefix = read.view.key_prefix();
            for key in read.keys.iter().flatten() {
                let mut full = prefix.clone();
                full.extend_from_slice(key);
                command.arg(full);
                asked += 1;
            }
        }
        let mut found: Vec<Option<Vec<u8>>> = if asked == 0 {
            Vec::new()
        } else {
            let mut connection = self.connection.clone();
            command
                .query_async(&mut connection)
                .await
                .map_err(|e| self.error(e))?
        };
        found.reverse();
        let mut out = Vec::with_capacity(reads.len());
        for read in reads {
            let values: Vec<Option<Vec<u8>>> = read
                .keys
                .iter()
                .map(|key| {
                    if key.is_some() {
                        found.pop().flatten()
                    } else {
                        None
                    }
                })
                .collect();
            if read.raw {
                out.push(raw_values(values));
            } else {
                let types = read.view.features.iter().map(|(_, t)| t.clone()).collect();
                out.push(decode_values(&values, types)?);
            }
        }
        Ok(out)
    }

    async fn compare_and_set(
        &self,
        view: &ViewRef,
        writes: &[BlobWrite],
        now: i64,
    ) -> Result<Vec<bool>> {
        let prefix = view.key_prefix();
        let mut out = Vec::with_capacity(writes.len());
        for chunk in writes.chunks(KEYS_PER_CALL * CALLS_PER_ROUND_TRIP / 8) {
            let calls: Vec<ScriptCall> = chunk
                .iter()
                .map(|write| {
                    let mut key = prefix.clone();
                    key.extend_from_slice(&write.key);
                    let expect = match &write.expect {
                        Expect::Anything => Vec::new(),
                        Expect::Absent => b"-".to_vec(),
                        Expect::Version(v) => v.to_vec(),
                    };
                    let ttl_ms = match write.expires_at {
                        Some(at) => (at.saturating_sub(now) / 1_000).max(1),
                        None => 0,
                    };
                    (
                        vec![key],
                        vec![
                            expect,
                            write.value.clone().unwrap_or_default(),
                            ttl_ms.to_string().into_bytes(),
                        ],
                    )
                })
                .collect();
            let answers = self.run_script(&self.cas, CAS_SCRIPT, &calls).await?;
            out.extend(answers.into_iter().map(|a| a == 1));
        }
        Ok(out)
    }

    async fn drop_view(&self, view: &ViewRef) -> Result<u64> {
        let mut pattern = Vec::new();
        for b in view.key_prefix() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.push(b'*');
        let mut connection = self.connection.clone();
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .map_err(|e| self.error(e))?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| self.error(e))?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn health(&self) -> Result<()> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
