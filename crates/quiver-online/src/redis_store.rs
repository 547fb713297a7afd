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
//!
//! On a Redis Cluster every key carries a hash tag derived from the entity key alone,
//! `q:{project}:{view}:{version}:{<8 hex digits>}` + the entity key bytes, so all views of
//! one entity live in one slot. Writes go out as one script call per slot group (a
//! script's keys must share a slot), many in flight at once; a lookup is one `MGET` that
//! the cluster client splits per slot (a multi-key command may not cross slots) and
//! sends at once. The cluster client follows `MOVED`/`ASK`; after a failover the store
//! rebuilds it (see [`Cluster`]). `rediss://` URLs use TLS
//! (rustls), with an optional CA file and client certificate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{
    Client, ClientTlsConfig, Cmd, ErrorKind as RedisErrorKind, FromRedisValue, RedisError,
    TlsCertificates,
};

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

/// Compare-and-set of entity blobs (aggregation views), each key on its own: KEYS: the
/// keys. ARGV: for each key, the expected 8-byte version (`''` anything, `'-'` absent),
/// the new value (`''` deletes) and its time to live in ms (`0`: none). Returns, per
/// key, 1 when written and 0 when the stored version was not the expected one. Only the
/// stored version is read (`GETRANGE`: `''` for a missing key, as every blob starts with
/// its 8 bytes), not the whole blob: copying blobs into Lua was a sixth of the script's
/// time.
const CAS_SCRIPT: &str = r"
local out = {}
for i = 1, #KEYS do
  local expect, value, expire_in = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local current = redis.call('GETRANGE', KEYS[i], 0, 7)
  local matches = true
  if expect == '-' then
    matches = current == ''
  elseif expect ~= '' then
    matches = current == expect
  end
  if not matches then
    out[i] = 0
  else
    if value == '' then
      redis.call('DEL', KEYS[i])
    elseif expire_in ~= '0' then
      redis.call('SET', KEYS[i], value, 'PX', expire_in)
    else
      redis.call('SET', KEYS[i], value)
    end
    out[i] = 1
  end
end
return out
";

/// Keys per script call, and script calls per pipelined round trip.
const KEYS_PER_CALL: usize = 500;
/// Keys per compare-and-set call: entity blobs are larger than rows (hundreds of bytes),
/// so fewer per call keep one script's run short.
const CAS_KEYS_PER_CALL: usize = 100;
const CALLS_PER_ROUND_TRIP: usize = 32;

/// One call of the write script: its keys and its arguments.
type ScriptCall = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Script calls being filled: at most `per_call` keys each and, on a cluster, the keys
/// of one call in one slot (a script's keys must share a slot). Each call remembers the
/// positions its keys were added with, to map answers back.
struct CallGroups {
    cluster: bool,
    per_call: usize,
    open: HashMap<Option<Slot>, (ScriptCall, Vec<usize>)>,
}

impl CallGroups {
    fn new(cluster: bool, per_call: usize) -> Self {
        CallGroups {
            cluster,
            per_call,
            open: HashMap::new(),
        }
    }

    /// Adds a key and its arguments; returns its call once the call is full.
    fn add(
        &mut self,
        key: Vec<u8>,
        args: impl IntoIterator<Item = Vec<u8>>,
        position: usize,
    ) -> Option<(ScriptCall, Vec<usize>)> {
        let slot = self.cluster.then(|| Slot::for_key(&key));
        let ((keys, call_args), positions) = self.open.entry(slot).or_default();
        keys.push(key);
        call_args.extend(args);
        positions.push(position);
        if keys.len() < self.per_call {
            return None;
        }
        self.open.remove(&slot)
    }

    /// The calls not full yet.
    fn finish(self) -> impl Iterator<Item = (ScriptCall, Vec<usize>)> {
        self.open.into_values()
    }
}

/// Connection settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port/db` (`rediss://` for TLS): the server, or for a
    /// cluster any number of its nodes (seeds).
    pub urls: Vec<String>,
    /// Whether `urls` are seeds of a Redis Cluster.
    pub cluster: bool,
    /// TLS: a PEM file of the certificate authority to trust instead of the system's.
    pub tls_ca: Option<PathBuf>,
    /// TLS: a PEM client certificate and its key, to present to the server.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
}

impl RedisOptions {
    /// One Redis server.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            urls: vec![url.into()],
            cluster: false,
            tls_ca: None,
            tls_client: None,
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
        }
    }

    /// A Redis Cluster reached through `seeds`.
    pub fn cluster(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        RedisOptions {
            urls: seeds.into_iter().map(Into::into).collect(),
            cluster: true,
            ..RedisOptions::new(String::new())
        }
    }

    /// The TLS files, read; `None` when none is set.
    fn certificates(&self, fail: impl Fn(String) -> Error) -> Result<Option<TlsCertificates>> {
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| fail(format!("cannot read {what} {}: {e}", path.display())))
        };
        let root_cert = self
            .tls_ca
            .as_ref()
            .map(|p| read("online.tls_ca", p))
            .transpose()?;
        let client_tls = match &self.tls_client {
            Some((cert, key)) => Some(ClientTlsConfig {
                client_cert: read("online.tls_cert", cert)?,
                client_key: read("online.tls_key", key)?,
            }),
            None => None,
        };
        Ok(
            (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
                client_tls,
                root_cert,
            }),
        )
    }
}

/// A connection to one server or to a cluster.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// A Redis Cluster connection that is rebuilt from the seed nodes when it fails with a
/// connection error. redis-rs 1.8's cluster client keeps redialling a primary that died
/// and never asks for the slot map again, so after a failover it would stay down (the
/// failover test showed it); a new client reads the map from a live node.
struct Cluster {
    client: ClusterClient,
    connect_timeout: Duration,
    current: std::sync::RwLock<ClusterConnection>,
    /// When the connection was last rebuilt; one rebuild at a time, at most one a second.
    rebuilt: tokio::sync::Mutex<Instant>,
}

/// The shortest time between two rebuilds of a cluster connection.
const CLUSTER_REBUILD_INTERVAL: Duration = Duration::from_secs(1);

impl Cluster {
    async fn connect(
        client: ClusterClient,
        connect_timeout: Duration,
    ) -> Result<Cluster, RedisError> {
        let connection = client.get_async_connection().await?;
        Ok(Cluster {
            client,
            connect_timeout,
            current: std::sync::RwLock::new(connection),
            rebuilt: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    fn connection(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After `error`, rebuilds the connection when the error says the connection (not the
    /// command) failed and no rebuild happened within the last second.
    async fn recover(&self, error: &RedisError) {
        // A client-side error counts too: after a failover the 1.8 client can also fail
        // its own per-node split of a multi-slot MGET ("Mismatch in the number of
        // multi-slot results"), which a new client does not.
        let broken = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_cluster_error()
            || error.kind() == RedisErrorKind::Client;
        if !broken {
            return;
        }
        let mut rebuilt = self.rebuilt.lock().await;
        if rebuilt.elapsed() < CLUSTER_REBUILD_INTERVAL {
            return;
        }
        *rebuilt = Instant::now();
        let connect = self.client.get_async_connection();
        match tokio::time::timeout(self.connect_timeout * 3, connect).await {
            Ok(Ok(connection)) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = connection;
                tracing::info!("rebuilt the Redis Cluster connection after: {error}");
            }
            Ok(Err(e)) => tracing::warn!("cannot rebuild the Redis Cluster connection: {e}"),
            Err(_) => tracing::warn!("cannot rebuild the Redis Cluster connection: no answer"),
        }
    }
}

/// The Redis online store.
#[derive(Clone)]
pub struct RedisStore {
    /// The URL(s) without passwords, for messages.
    url: String,
    connection: Connection,
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

/// Connection attempts to a cluster node before the client forgets it and refreshes
/// the slot map.
const NODE_CONNECT_ATTEMPTS: std::num::NonZeroUsize =
    std::num::NonZeroUsize::new(3).expect("3 > 0");

/// Script calls in flight at once on a cluster.
const CLUSTER_CALLS_IN_FLIGHT: usize = 64;

impl RedisStore {
    /// Connects to Redis; fails with the URL in the message when it cannot.
    pub async fn connect(options: &RedisOptions) -> Result<Self> {
        let url = options
            .urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(", ");
        let fail_with = |message: String| Error::Redis {
            url: url.clone(),
            message,
        };
        let fail = |e: RedisError| fail_with(e.to_string());
        if options.urls.iter().any(|u| u.starts_with("rediss://")) {
            // redis uses rustls without choosing a crypto provider; another part of the
            // process may have installed one already, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let certificates = options.certificates(fail_with)?;
        let connect = async {
            if options.cluster {
                let mut builder =
                    ClusterClientBuilder::new(options.urls.iter().map(String::as_str))
                        .connection_timeout(options.connect_timeout)
                        .response_timeout(options.command_timeout)
                        .retries(3)
                        // A node that refuses this often is dropped from the client's map, so
                        // its slots are looked up again: a failover's promoted replica is found
                        // (without it the client would redial a dead primary forever).
                        .max_connection_attempts(NODE_CONNECT_ATTEMPTS);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                let client = builder.build()?;
                let cluster = Cluster::connect(client, options.connect_timeout).await?;
                Ok(Connection::Cluster(Arc::new(cluster)))
            } else {
                let target = options.urls.first().map_or("", String::as_str);
                let client = match certificates {
                    Some(certificates) => Client::build_with_tls(target, certificates)?,
                    None => Client::open(target)?,
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(options.command_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Connection::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
        };
        let connection = tokio::time::timeout(options.connect_timeout * 3, connect)
            .await
            .map_err(|_| {
                fail_with(format!(
                    "no answer within {:?}",
                    options.connect_timeout * 3
                ))
            })?
            .map_err(fail)?;
        Ok(RedisStore {
            url,
            connection,
            script: redis::Script::new(WRITE_SCRIPT),
            cas: redis::Script::new(CAS_SCRIPT),
        })
    }

    /// The key of one entity of a view: on a cluster with the entity's hash tag.
    fn key(&self, prefix: &[u8], entity: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(prefix.len() + entity.len() + 10);
        key.extend_from_slice(prefix);
        if self.is_cluster() {
            // `{` + 8 hex digits + `}`, written in place (this runs once per key).
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let hash = fnv1a(entity);
            key.push(b'{');
            key.extend((0..8).rev().map(|i| HEX[(hash >> (4 * i)) as usize & 0xf]));
            key.push(b'}');
        }
        key.extend_from_slice(entity);
        key
    }

    /// Runs one command on the server or cluster.
    async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, RedisError> {
        match &self.connection {
            Connection::Single(connection) => command.query_async(&mut connection.clone()).await,
            Connection::Cluster(cluster) => {
                let result = command.query_async(&mut cluster.connection()).await;
                if let Err(e) = &result {
                    cluster.recover(e).await;
                }
                result
            }
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self.connection, Connection::Cluster(_))
    }

    /// Script calls sent together: one pipeline on a server; on a cluster, many small
    /// calls (one per slot group) in flight.
    fn calls_per_round(&self) -> usize {
        if self.is_cluster() {
            1_024
        } else {
            CALLS_PER_ROUND_TRIP
        }
    }

    fn error(&self, e: RedisError) -> Error {
        Error::Redis {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }

    async fn run_pipeline(&self, calls: &[ScriptCall]) -> Result<u64> {
        let counts: Vec<u64> = self.run_script(&self.script, WRITE_SCRIPT, calls).await?;
        Ok(counts.iter().sum())
    }

    /// Runs `script` once per call — pipelined in one round trip on a server, many calls
    /// in flight on a cluster (each call's keys share a slot) — and returns each call's
    /// answer. Loads the script again when a server lost it (a restart, a new node).
    async fn run_script<T: FromRedisValue + Send>(
        &self,
        script: &redis::Script,
        source: &str,
        calls: &[ScriptCall],
    ) -> Result<Vec<T>> {
        match self.send_script(script, calls).await {
            Ok(counts) => Ok(counts),
            Err(e) if e.kind() == RedisErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // On a cluster `SCRIPT LOAD` goes to every primary.
                self.query::<String>(redis::cmd("SCRIPT").arg("LOAD").arg(source))
                    .await
                    .map_err(|e| self.error(e))?;
                self.send_script(script, calls)
                    .await
                    .map_err(|e| self.error(e))
            }
            Err(e) => Err(self.error(e)),
        }
    }

    async fn send_script<T: FromRedisValue + Send>(
        &self,
        script: &redis::Script,
        calls: &[ScriptCall],
    ) -> Result<Vec<T>, RedisError> {
        let call = |(keys, args): &ScriptCall| {
            let mut command = redis::cmd("EVALSHA");
            command
                .arg(script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
            command
        };
        match &self.connection {
            Connection::Single(connection) => {
                let mut pipe = redis::pipe();
                for each in calls {
                    pipe.add_command(call(each));
                }
                pipe.query_async(&mut connection.clone()).await
            }
            Connection::Cluster(cluster) => {
                // Owned commands: a stream of futures borrowing `calls` trips up the
                // `Send` check of the async trait methods.
                let connection = cluster.connection();
                let sends: Vec<_> = calls
                    .iter()
                    .map(|each| {
                        let command = call(each);
                        let mut connection = connection.clone();
                        async move { command.query_async::<T>(&mut connection).await }
                    })
                    .collect();
                let result = futures::stream::iter(sends)
                    .buffered(CLUSTER_CALLS_IN_FLIGHT)
                    .try_collect()
                    .await;
                if let Err(e) = &result {
                    cluster.recover(e).await;
                }
                result
            }
        }
    }

    /// The primaries' addresses (`host`, `port`) from `CLUSTER SLOTS`.
    async fn primaries(&self) -> Result<Vec<(String, u16)>> {
        let slots: Vec<redis::Value> = self
            .query(&redis::cmd("CLUSTER").arg("SLOTS").to_owned())
            .await
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for range in slots {
            // [start, end, [host, port, id, …], replicas…]
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let Some(redis::Value::Array(primary)) = parts.get(2) else {
                continue;
            };
            let host: Option<String> = primary
                .first()
                .and_then(|v| String::from_redis_value(v.clone()).ok());
            let port: Option<u16> = primary
                .get(1)
                .and_then(|v| u16::from_redis_value(v.clone()).ok());
            if let (Some(host), Some(port)) = (host, port)
                && !out.contains(&(host.clone(), port))
            {
                out.push((host, port));
            }
        }
        Ok(out)
    }
}

/// FNV-1a of an entity key: its hash tag on a cluster (the full key follows the tag, so
/// two entities sharing a tag stay two keys).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[async_trait]
impl OnlineStore for RedisStore {
    async fn write(&self, view: &ViewRef, rows: &OnlineRows, now: i64) -> Result<WriteStats> {
        let prefix = view.key_prefix();
        let calls_per_round = self.calls_per_round();
        let mut stats = WriteStats::default();
        let mut groups = CallGroups::new(self.is_cluster(), KEYS_PER_CALL);
        let mut calls: Vec<ScriptCall> = Vec::new();
        for row in 0..rows.len() {
            let Some(entity) = &rows.keys[row] else {
                continue;
            };
            let key = self.key(&prefix, entity);
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
            stats.rows += 1;
            let expire = expire_ms.to_string().into_bytes();
            if let Some((call, _)) = groups.add(key, [value, expire], row) {
                calls.push(call);
                if calls.len() == calls_per_round {
                    stats.written += self.run_pipeline(&calls).await?;
                    calls.clear();
                }
            }
        }
        calls.extend(groups.finish().map(|(call, _)| call));
        for round in calls.chunks(calls_per_round) {
            stats.written += self.run_pipeline(round).await?;
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
                command.arg(self.key(&prefix, key));
                asked += 1;
            }
        }
        let mut found: Vec<Option<Vec<u8>>> = if asked == 0 {
            Vec::new()
        } else {
            // On a cluster the client splits the keys per slot and sends the parts at once.
            self.query(&command).await.map_err(|e| self.error(e))?
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
        // One script call per group of keys, each key compared and set on its own;
        // `positions` maps answers back to `writes`.
        let mut groups = CallGroups::new(self.is_cluster(), CAS_KEYS_PER_CALL);
        let mut calls: Vec<ScriptCall> = Vec::new();
        let mut positions: Vec<Vec<usize>> = Vec::new();
        for (position, write) in writes.iter().enumerate() {
            let key = self.key(&prefix, &write.key);
            let expect = match &write.expect {
                Expect::Anything => Vec::new(),
                Expect::Absent => b"-".to_vec(),
                Expect::Version(v) => v.to_vec(),
            };
            let ttl_ms = match write.expires_at {
                Some(at) => (at.saturating_sub(now) / 1_000).max(1),
                None => 0,
            };
            let value = write.value.clone().unwrap_or_default();
            let args = [expect, value, ttl_ms.to_string().into_bytes()];
            if let Some((call, at)) = groups.add(key, args, position) {
                calls.push(call);
                positions.push(at);
            }
        }
        for (call, at) in groups.finish() {
            calls.push(call);
            positions.push(at);
        }
        let mut out = vec![false; writes.len()];
        let calls_per_round = self.calls_per_round();
        for (round, at) in calls
            .chunks(calls_per_round)
            .zip(positions.chunks(calls_per_round))
        {
            let answers: Vec<Vec<u64>> = self.run_script(&self.cas, CAS_SCRIPT, round).await?;
            for (answers, at) in answers.iter().zip(at) {
                if answers.len() != at.len() {
                    return Err(Error::Redis {
                        url: self.url.clone(),
                        message: format!(
                            "the compare-and-set script answered {} of {} keys",
                            answers.len(),
                            at.len()
                        ),
                    });
                }
                for (answer, position) in answers.iter().zip(at) {
                    out[*position] = *answer == 1;
                }
            }
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
        // SCAN walks one server: on a cluster, every primary in turn.
        let nodes = match &self.connection {
            Connection::Single(_) => vec![None],
            Connection::Cluster(_) => self.primaries().await?.into_iter().map(Some).collect(),
        };
        let mut removed = 0;
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let answer: Result<(u64, Vec<Vec<u8>>), RedisError> =
                    match (&self.connection, &node) {
                        (Connection::Cluster(cluster), Some((host, port))) => {
                            let routing =
                                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                    host: host.clone(),
                                    port: *port,
                                });
                            match cluster.connection().route_command(scan, routing).await {
                                Ok(value) => FromRedisValue::from_redis_value(value)
                                    .map_err(RedisError::from),
                                Err(e) => Err(e),
                            }
                        }
                        _ => self.query(&scan).await,
                    };
                let (next, keys) = answer.map_err(|e| self.error(e))?;
                if !keys.is_empty() {
                    // On a cluster the client splits the keys per slot.
                    let n: u64 = self
                        .query(redis::cmd("UNLINK").arg(&keys))
                        .await
                        .map_err(|e| self.error(e))?;
                    removed += n;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// On a cluster, every node must answer.
    async fn health(&self) -> Result<()> {
        self.query::<redis::Value>(&redis::cmd("PING"))
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    fn name(&self) -> &'static str {
        match self.connection {
            Connection::Single(_) => "redis",
            Connection::Cluster(_) => "redis-cluster",
        }
    }
}
