//! One conformance suite for every `OnlineStore`: the embedded store always, Redis on a
//! private `redis-server` this suite starts on a free loopback port, a private 3-primary
//! Redis Cluster, and a private Redis over TLS (certificates made by `openssl`).

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is a test failure

#[path = "../../../tests/support/redis_cluster.rs"]
mod redis_cluster;
#[path = "../../../tests/support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use quiver_online::codec::encode_entity_keys;
use quiver_online::{
    BLOB_VERSION_BYTES, BlobWrite, EmbeddedStore, Expect, FeatureStatus, OnlineRows, OnlineStore,
    RedisOptions, RedisStore, ViewRead, ViewRef, ViewValues, statuses,
};
use redis_cluster::{Certificates, RedisCluster, TlsRedis};
use redis_server::RedisServer;

const HOUR: i64 = 3_600_000_000;
const NOW: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn view(name: &str, version: u32, ttl: Option<i64>) -> ViewRef {
    ViewRef {
        project: "conf".into(),
        view: name.into(),
        version,
        ttl_micros: ttl,
        features: vec![
            ("rate".into(), DataType::Float64),
            ("trips".into(), DataType::Int64),
        ],
    }
}

fn keys(ids: &[Option<i64>]) -> Vec<Option<Vec<u8>>> {
    encode_entity_keys(&[Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef]).unwrap()
}

fn rows(
    ids: &[i64],
    ts: &[i64],
    created: &[i64],
    rate: &[Option<f64>],
    trips: &[Option<i64>],
) -> OnlineRows {
    OnlineRows {
        keys: keys(&ids.iter().map(|i| Some(*i)).collect::<Vec<_>>()),
        event_ts: ts.to_vec(),
        created: created.to_vec(),
        features: vec![
            Arc::new(Float64Array::from(rate.to_vec())),
            Arc::new(Int64Array::from(trips.to_vec())),
        ],
    }
}

async fn read_one(
    store: &dyn OnlineStore,
    view: &ViewRef,
    ids: &[Option<i64>],
) -> (Vec<Option<f64>>, Vec<FeatureStatus>, Vec<Option<i64>>) {
    let values = read_values(store, view, ids).await.unwrap();
    let st = statuses(&values, &values.features[0], view.ttl_micros, NOW);
    (rates(&values), st, values.event_ts)
}

/// One lookup of `ids` in `view`.
async fn read_values(
    store: &dyn OnlineStore,
    view: &ViewRef,
    ids: &[Option<i64>],
) -> Result<ViewValues, String> {
    let keys = keys(ids);
    Ok(store
        .read(
            &[ViewRead {
                view,
                keys: &keys,
                raw: false,
            }],
            NOW,
        )
        .await
        .map_err(|e| e.to_string())?
        .remove(0))
}

/// The `rate` feature of a lookup's answer.
fn rates(values: &ViewValues) -> Vec<Option<f64>> {
    let rate = values.features[0].as_primitive::<Float64Type>();
    (0..rate.len())
        .map(|i| rate.is_valid(i).then(|| rate.value(i)))
        .collect()
}

/// The raw blob of one key (and of a NULL key, which finds nothing).
async fn read_blob(store: &dyn OnlineStore, view: &ViewRef, key: &[u8]) -> Vec<Option<Vec<u8>>> {
    let keys = vec![Some(key.to_vec()), None];
    store
        .read(
            &[ViewRead {
                view,
                keys: &keys,
                raw: true,
            }],
            NOW,
        )
        .await
        .unwrap()
        .remove(0)
        .raw
}

async fn suite(store: &dyn OnlineStore) {
    use FeatureStatus::*;
    store.health().await.unwrap();

    // Values come back with their event times; missing keys are NOT_FOUND, NULLs NULL_VALUE.
    let v = view("drivers", 1, None);
    let stats = store
        .write(
            &v,
            &rows(
                &[1, 2],
                &[NOW - HOUR, NOW - 2 * HOUR],
                &[0, 0],
                &[Some(0.5), None],
                &[Some(3), Some(4)],
            ),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!((stats.rows, stats.written), (2, 2), "{}", store.name());
    let (values, st, ts) = read_one(store, &v, &[Some(1), Some(2), Some(3), None]).await;
    assert_eq!(values, vec![Some(0.5), None, None, None]);
    assert_eq!(st, vec![Present, NullValue, NotFound, NotFound]);
    assert_eq!(ts, vec![Some(NOW - HOUR), Some(NOW - 2 * HOUR), None, None]);

    // Newer wins: an older event time never overwrites; equal event time → greater created.
    let older = store
        .write(
            &v,
            &rows(&[1], &[NOW - 3 * HOUR], &[0], &[Some(9.0)], &[None]),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        older.written,
        0,
        "{}: an older row must not overwrite",
        store.name()
    );
    assert_eq!(read_one(store, &v, &[Some(1)]).await.0, vec![Some(0.5)]);
    store
        .write(
            &v,
            &rows(&[1], &[NOW - HOUR], &[5], &[Some(0.6)], &[None]),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        read_one(store, &v, &[Some(1)]).await.0,
        vec![Some(0.6)],
        "{}: greater created wins",
        store.name()
    );
    store
        .write(
            &v,
            &rows(&[1], &[NOW - HOUR], &[4], &[Some(0.7)], &[None]),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        read_one(store, &v, &[Some(1)]).await.0,
        vec![Some(0.6)],
        "{}: smaller created loses",
        store.name()
    );
    store
        .write(&v, &rows(&[1], &[NOW], &[0], &[Some(0.8)], &[None]), NOW)
        .await
        .unwrap();
    assert_eq!(
        read_one(store, &v, &[Some(1)]).await.0,
        vec![Some(0.8)],
        "{}: newer event wins",
        store.name()
    );

    // TTL: older than the TTL at lookup time is OUTSIDE_MAX_AGE; the boundary is inclusive.
    let t = view("ttl_view", 1, Some(HOUR));
    store
        .write(
            &t,
            &rows(
                &[1, 2, 3],
                &[NOW - HOUR, NOW - HOUR - 1, NOW],
                &[0; 3],
                &[Some(1.0), Some(2.0), None],
                &[None; 3],
            ),
            NOW,
        )
        .await
        .unwrap();
    let (_, st, _) = read_one(store, &t, &[Some(1), Some(2), Some(3)]).await;
    assert_eq!(
        st,
        vec![Present, OutsideMaxAge, NullValue],
        "{}",
        store.name()
    );

    // A value already older than two TTLs when written is still kept (OUTSIDE_MAX_AGE)
    // for one TTL after the write, in every store.
    store
        .write(
            &t,
            &rows(&[4], &[NOW - 3 * HOUR], &[0], &[Some(4.0)], &[None]),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        read_one(store, &t, &[Some(4)]).await.1,
        vec![OutsideMaxAge],
        "{}",
        store.name()
    );

    // Several views and versions in one read; versions are isolated.
    let v2 = view("drivers", 2, None);
    store
        .write(
            &v2,
            &rows(&[1], &[NOW], &[0], &[Some(2.5)], &[Some(1)]),
            NOW,
        )
        .await
        .unwrap();
    let k = keys(&[Some(1), Some(2)]);
    let both = store
        .read(
            &[
                ViewRead {
                    view: &v,
                    keys: &k,
                    raw: false,
                },
                ViewRead {
                    view: &v2,
                    keys: &k,
                    raw: false,
                },
                ViewRead {
                    view: &t,
                    keys: &k,
                    raw: false,
                },
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(both.len(), 3);
    assert_eq!(
        both[0].features[0].as_primitive::<Float64Type>().value(0),
        0.8
    );
    assert_eq!(
        both[1].features[0].as_primitive::<Float64Type>().value(0),
        2.5
    );
    assert!(both[1].event_ts[1].is_none());
    assert_eq!(both[1].features[1].as_primitive::<Int64Type>().value(0), 1);

    // Dropping a version removes exactly its keys.
    let removed = store.drop_view(&v).await.unwrap();
    assert_eq!(removed, 2, "{}", store.name());
    assert_eq!(
        read_one(store, &v, &[Some(1), Some(2)]).await.1,
        vec![NotFound, NotFound]
    );
    assert_eq!(read_one(store, &v2, &[Some(1)]).await.0, vec![Some(2.5)]);
    assert_eq!(read_one(store, &t, &[Some(1)]).await.1, vec![Present]);

    // String and composite keys.
    let s = ViewRef {
        project: "conf".into(),
        view: "cities".into(),
        version: 1,
        ttl_micros: None,
        features: vec![("name".into(), DataType::Utf8)],
    };
    let composite: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 1])),
        Arc::new(StringArray::from(vec!["nyc", "sf"])),
    ];
    let composite_keys = encode_entity_keys(&composite).unwrap();
    let names: ArrayRef = Arc::new(StringArray::from(vec!["first", "second"]));
    store
        .write(
            &s,
            &OnlineRows {
                keys: composite_keys.clone(),
                event_ts: vec![NOW; 2],
                created: vec![0; 2],
                features: vec![names],
            },
            NOW,
        )
        .await
        .unwrap();
    let got = store
        .read(
            &[ViewRead {
                view: &s,
                keys: &composite_keys[1..],
                raw: false,
            }],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(got[0].features[0].as_string::<i32>().value(0), "second");

    // Blobs (aggregation views): compare-and-set, raw reads, expiry, deletion.
    let b = view("blobs", 1, None);
    let key = keys(&[Some(9)])[0].clone().unwrap();
    let blob = |version: u8, body: &[u8]| {
        let mut value = vec![version; BLOB_VERSION_BYTES];
        value.extend_from_slice(body);
        value
    };
    let write = |expect: Expect, value: Option<Vec<u8>>, expires_at: Option<i64>| BlobWrite {
        key: key.clone(),
        expect,
        value,
        expires_at,
    };
    assert_eq!(
        store
            .compare_and_set(
                &b,
                &[write(Expect::Version([1; 8]), Some(blob(2, b"x")), None)],
                NOW
            )
            .await
            .unwrap(),
        vec![false],
        "{}: a version that is not stored does not match",
        store.name()
    );
    assert_eq!(
        store
            .compare_and_set(
                &b,
                &[write(Expect::Absent, Some(blob(1, b"one")), None)],
                NOW
            )
            .await
            .unwrap(),
        vec![true]
    );
    assert_eq!(
        store
            .compare_and_set(
                &b,
                &[write(Expect::Absent, Some(blob(9, b"lost")), None)],
                NOW
            )
            .await
            .unwrap(),
        vec![false],
        "{}: absent means absent",
        store.name()
    );
    let both = store
        .compare_and_set(
            &b,
            &[
                write(
                    Expect::Version([1; 8]),
                    Some(blob(2, b"two")),
                    Some(NOW + HOUR),
                ),
                write(Expect::Version([1; 8]), Some(blob(3, b"stale")), None),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        both,
        vec![true, false],
        "{}: the second write read an old version",
        store.name()
    );
    assert_eq!(
        read_blob(store, &b, &key).await,
        vec![Some(blob(2, b"two")), None]
    );
    store
        .compare_and_set(&b, &[write(Expect::Anything, None, None)], NOW)
        .await
        .unwrap();
    assert_eq!(
        read_blob(store, &b, &key).await,
        vec![None, None],
        "{}: deleted",
        store.name()
    );

    // Many entities in one call (more than one script call's worth, on many cluster
    // slots): each key is compared on its own and every answer lands at its write.
    let many: Vec<Vec<u8>> = keys(&(1_000..1_250).map(Some).collect::<Vec<_>>())
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let first: Vec<BlobWrite> = many
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, k)| BlobWrite {
            key: k.clone(),
            expect: Expect::Absent,
            value: Some(blob(1, k)),
            expires_at: None,
        })
        .collect();
    let answers = store.compare_and_set(&b, &first, NOW).await.unwrap();
    assert!(answers.iter().all(|a| *a), "{}: fresh keys", store.name());
    // Stored: every key but each fifth (version 1). Expect version 1 everywhere: the
    // fifths fail, the others are written.
    let second: Vec<BlobWrite> = many
        .iter()
        .map(|k| BlobWrite {
            key: k.clone(),
            expect: Expect::Version([1; 8]),
            value: Some(blob(2, k)),
            expires_at: None,
        })
        .collect();
    let answers = store.compare_and_set(&b, &second, NOW).await.unwrap();
    let expected: Vec<bool> = (0..many.len()).map(|i| i % 5 != 0).collect();
    assert_eq!(answers, expected, "{}: answers per key", store.name());
    let lookup: Vec<Option<Vec<u8>>> = many.iter().cloned().map(Some).collect();
    let stored = store
        .read(
            &[ViewRead {
                view: &b,
                keys: &lookup,
                raw: true,
            }],
            NOW,
        )
        .await
        .unwrap()
        .remove(0)
        .raw;
    for (i, (k, value)) in many.iter().zip(stored).enumerate() {
        let want = (i % 5 != 0).then(|| blob(2, k));
        assert_eq!(value, want, "{}: entity {i}", store.name());
    }

    // Names that share a prefix never share keys: dropping `a` v1 leaves `a` v11, `a1`
    // v1 and `a_1` v1 alone (names are identifiers, and every part of the key prefix
    // ends with `:`).
    let named = [
        view("a", 1, None),
        view("a", 11, None),
        view("a1", 1, None),
        view("a_1", 1, None),
    ];
    for v in &named {
        store
            .write(v, &rows(&[1], &[NOW], &[0], &[Some(1.0)], &[None]), NOW)
            .await
            .unwrap();
    }
    assert_eq!(
        store.drop_view(&named[0]).await.unwrap(),
        1,
        "{}",
        store.name()
    );
    assert_eq!(
        read_one(store, &named[0], &[Some(1)]).await.1,
        vec![NotFound]
    );
    for v in &named[1..] {
        assert_eq!(read_one(store, v, &[Some(1)]).await.1, vec![Present], "{v}");
    }
}

#[tokio::test]
async fn embedded_store_survives_its_file_being_removed_and_never_waits_for_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("online.db");
    let store = EmbeddedStore::open(&path, ".quiver/online.db").unwrap();
    let v = view("drivers", 1, None);
    store
        .write(&v, &rows(&[1], &[NOW], &[0], &[Some(0.5)], &[None]), NOW)
        .await
        .unwrap();

    // Another process holds the write lock, and this store's own write waits for it:
    // lookups still answer at once, and the write goes through once the lock is free.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        let v = v.clone();
        async move {
            store
                .write(
                    &v,
                    &rows(&[1], &[NOW + 1], &[0], &[Some(0.6)], &[None]),
                    NOW,
                )
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the write should wait for the other writer"
    );
    let started = std::time::Instant::now();
    assert_eq!(read_one(&store, &v, &[Some(1)]).await.0, vec![Some(0.5)]);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    waiting.await.unwrap().unwrap();
    assert_eq!(read_one(&store, &v, &[Some(1)]).await.0, vec![Some(0.6)]);

    // The file is removed under the store: health says so (without the absolute path),
    // then the store reopens the file where it is now.
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(dir.path().join("online.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("online.db-shm"));
    let err = store.health().await.unwrap_err().to_string();
    assert!(err.contains("was removed"), "{err}");
    assert!(!err.contains(&dir.path().display().to_string()), "{err}");
    store.health().await.unwrap();
    assert_eq!(
        read_one(&store, &v, &[Some(1)]).await.1,
        vec![FeatureStatus::NotFound]
    );
    store
        .write(&v, &rows(&[1], &[NOW], &[0], &[Some(0.7)], &[None]), NOW)
        .await
        .unwrap();
    // What this store writes, a new store on the same path reads: no split brain.
    let fresh = EmbeddedStore::open(&path, ".quiver/online.db").unwrap();
    assert_eq!(read_one(&fresh, &v, &[Some(1)]).await.0, vec![Some(0.7)]);
}

#[tokio::test]
async fn embedded_store_refuses_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("online.db");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let err = EmbeddedStore::open(&path, ".quiver/online.db")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("embedded online store .quiver/online.db"),
        "{err}"
    );
}

#[tokio::test]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("online.db"), "online.db").unwrap();
    suite(&store).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&RedisOptions::new(server.url()))
        .await
        .unwrap();
    suite(&store).await;

    // Keys carry an expiry when the view has a TTL (one TTL past max age), none otherwise.
    let ttl_keys = server.command(&["KEYS", "q:conf:ttl_view:1:*"]);
    assert!(ttl_keys.starts_with("*4"), "{ttl_keys}");
    let no_ttl = server.command(&["KEYS", "q:conf:drivers:2:*"]);
    assert!(no_ttl.starts_with("*1"), "{no_ttl}");
    let ttl_stats = server.command(&["INFO", "keyspace"]);
    assert!(
        ttl_stats.contains("expires=4"),
        "four keys with an expiry: {ttl_stats}"
    );
}

#[tokio::test]
async fn redis_reconnects_after_restart_and_unreachable_is_a_clear_error() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&RedisOptions::new(server.url()))
        .await
        .unwrap();
    let v = view("drivers", 1, None);
    store
        .write(&v, &rows(&[1], &[NOW], &[0], &[Some(0.5)], &[None]), NOW)
        .await
        .unwrap();

    server.restart(); // empty again: values are gone, but the store must reconnect by itself
    let mut answered = false;
    for _ in 0..20 {
        if store.health().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(answered, "the store did not reconnect after a restart");
    store
        .write(&v, &rows(&[1], &[NOW], &[0], &[Some(0.7)], &[None]), NOW)
        .await
        .unwrap();
    assert_eq!(read_one(&store, &v, &[Some(1)]).await.0, vec![Some(0.7)]);

    server.kill();
    let started = std::time::Instant::now();
    let err = store
        .read(
            &[ViewRead {
                view: &v,
                keys: &keys(&[Some(1)]),
                raw: false,
            }],
            NOW,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{}", server.port)), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "a down server must not hang lookups"
    );

    let mut options = RedisOptions::new(format!("redis://127.0.0.1:{}/0", server.port));
    options.connect_timeout = std::time::Duration::from_millis(300);
    let err = RedisStore::connect(&options).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("redis at redis://127.0.0.1:{}/0", server.port)),
        "{err}"
    );
}

/// The ids' rates as one lookup of `view` reads them (`Err` while the store fails).
async fn try_rates(
    store: &dyn OnlineStore,
    view: &ViewRef,
    ids: &[i64],
) -> Result<Vec<Option<f64>>, String> {
    let ids: Vec<Option<i64>> = ids.iter().map(|i| Some(*i)).collect();
    Ok(rates(&read_values(store, view, &ids).await?))
}

/// `rows` for `ids` with rate = id / 10 (+ `shift`).
fn id_rows(ids: &[i64], shift: f64) -> OnlineRows {
    let n = ids.len();
    let rates: Vec<Option<f64>> = ids.iter().map(|i| Some(*i as f64 / 10.0 + shift)).collect();
    rows(ids, &vec![NOW; n], &vec![0; n], &rates, &vec![None; n])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_conforms_and_keeps_each_entity_in_one_slot() {
    let cluster = RedisCluster::start(3, 0);
    let store = RedisStore::connect(&RedisOptions::cluster(cluster.seeds()))
        .await
        .unwrap();
    assert_eq!(store.name(), "redis-cluster");
    suite(&store).await;

    // Every view of one entity lives in one slot (one hash tag, on one node), and the
    // entities spread over all primaries.
    let ids: Vec<i64> = (0..300).collect();
    let (a, b) = (view("slot_a", 1, None), view("slot_b", 1, None));
    for v in [&a, &b] {
        let stats = store.write(v, &id_rows(&ids, 0.0), NOW).await.unwrap();
        assert_eq!(stats.written, 300);
    }
    let mut node_of_tag = std::collections::HashMap::new();
    let mut keys_seen = 0;
    for port in &cluster.ports {
        for line in cluster
            .cli(*port, &["--no-raw", "KEYS", "q:conf:slot_*"])
            .lines()
        {
            let (Some(open), Some(close)) = (line.find('{'), line.find('}')) else {
                continue;
            };
            keys_seen += 1;
            let tag = line[open..=close].to_string();
            let owner = *node_of_tag.entry(tag.clone()).or_insert(*port);
            assert_eq!(owner, *port, "{tag} is on two nodes");
        }
    }
    assert_eq!(keys_seen, 600);
    let nodes: std::collections::HashSet<_> = node_of_tag.values().collect();
    assert_eq!(nodes.len(), 3, "entities on every primary");
    // One lookup of 300 entities in two views: the client asks every node.
    let expected: Vec<Option<f64>> = ids.iter().map(|i| Some(*i as f64 / 10.0)).collect();
    assert_eq!(try_rates(&store, &a, &ids).await.unwrap(), expected);
    assert_eq!(try_rates(&store, &b, &ids).await.unwrap(), expected);
    // Dropping a view walks every primary.
    assert_eq!(store.drop_view(&a).await.unwrap(), 300);
    assert_eq!(try_rates(&store, &a, &ids).await.unwrap(), vec![None; 300]);
    assert_eq!(try_rates(&store, &b, &ids).await.unwrap(), expected);
}

/// A primary with a replica is killed (SIGKILL): after the failover lookups answer
/// again, with every write acknowledged (and replicated) before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_lookups_recover_after_a_failover_without_losing_acknowledged_writes() {
    let mut cluster = RedisCluster::start(3, 1);
    let mut options = RedisOptions::cluster(cluster.seeds());
    options.connect_timeout = std::time::Duration::from_millis(500);
    options.command_timeout = std::time::Duration::from_millis(1_000);
    let store = RedisStore::connect(&options).await.unwrap();
    let v = view("failover", 1, None);
    let ids: Vec<i64> = (0..500).collect();
    store.write(&v, &id_rows(&ids, 0.0), NOW).await.unwrap();
    for primary in 0..cluster.masters {
        cluster.wait_replicated(primary);
    }
    cluster.kill(0);

    let expected: Vec<Option<f64>> = ids.iter().map(|i| Some(*i as f64 / 10.0)).collect();
    let started = std::time::Instant::now();
    let mut failed_while_failing_over = 0;
    let mut last_error: String;
    loop {
        match try_rates(&store, &v, &ids).await {
            Ok(rates) => {
                assert_eq!(rates, expected, "acknowledged writes survive the failover");
                break;
            }
            Err(e) => {
                assert!(e.contains("redis at redis://127.0.0.1"), "{e}");
                failed_while_failing_over += 1;
                last_error = e;
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "lookups did not recover after the failover: {last_error}\n{}",
            cluster.cli(cluster.ports[1], &["CLUSTER", "NODES"])
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Writes go on through the promoted replica.
    store.write(&v, &id_rows(&ids, 1.0), NOW + 1).await.unwrap();
    let shifted: Vec<Option<f64>> = ids.iter().map(|i| Some(*i as f64 / 10.0 + 1.0)).collect();
    assert_eq!(try_rates(&store, &v, &ids).await.unwrap(), shifted);
    eprintln!("lookups failed {failed_while_failing_over} times during the failover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_trusts_the_given_ca_and_presents_a_client_certificate() {
    let server = TlsRedis::start();
    let mut options = RedisOptions::new(server.url());
    options.tls_ca = Some(server.file("ca.crt"));
    options.tls_client = Some((server.file("client.crt"), server.file("client.key")));
    let store = RedisStore::connect(&options).await.unwrap();
    suite(&store).await;

    // Refused: no client certificate (the server requires one), and no CA (the system's
    // roots do not know the test's); a missing file names its key.
    let fails = |options: RedisOptions| async move {
        match RedisStore::connect(&options).await {
            Err(e) => e.to_string(),
            Ok(store) => store.health().await.unwrap_err().to_string(),
        }
    };
    let mut quick = options.clone();
    quick.connect_timeout = std::time::Duration::from_millis(500);
    quick.command_timeout = std::time::Duration::from_millis(500);
    let without_cert = RedisOptions {
        tls_client: None,
        ..quick.clone()
    };
    let err = fails(without_cert).await;
    assert!(
        err.starts_with(&format!("redis at {}", server.url())),
        "{err}"
    );
    let without_ca = RedisOptions {
        tls_ca: None,
        ..quick.clone()
    };
    let err = fails(without_ca).await;
    assert!(
        err.starts_with(&format!("redis at {}", server.url())),
        "{err}"
    );
    let missing = RedisOptions {
        tls_ca: Some(server.file("nope.crt")),
        ..quick.clone()
    };
    let err = fails(missing).await;
    assert!(err.contains("cannot read online.tls_ca"), "{err}");
}

/// A cluster that speaks only TLS (clients, cluster bus, replication) and requires a
/// client certificate: `rediss://` seeds with the CA and the client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_over_tls_conforms() {
    let certificates = Certificates::make();
    let cluster = RedisCluster::start_tls(3, 0, &certificates);
    let mut options = RedisOptions::cluster(cluster.seeds());
    options.tls_ca = Some(certificates.file("ca.crt"));
    options.tls_client = Some((
        certificates.file("client.crt"),
        certificates.file("client.key"),
    ));
    let store = RedisStore::connect(&options).await.unwrap();
    suite(&store).await;
    let ids: Vec<i64> = (0..100).collect();
    let v = view("tls_cluster", 1, None);
    store.write(&v, &id_rows(&ids, 0.0), NOW).await.unwrap();
    let expected: Vec<Option<f64>> = ids.iter().map(|i| Some(*i as f64 / 10.0)).collect();
    assert_eq!(try_rates(&store, &v, &ids).await.unwrap(), expected);
}
