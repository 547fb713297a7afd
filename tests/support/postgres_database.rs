//! A PostgreSQL database of one test's own on the machine's server (by default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust auth; `QUIVER_TEST_POSTGRES`
//! names another admin URL): created with a unique name, dropped when the value drops.
//! `.ci/run` starts PostgreSQL when it is not running; when it cannot be reached the
//! test fails (it does not skip).

#![allow(dead_code)] // each suite that includes this file uses a different part

use std::sync::atomic::{AtomicUsize, Ordering};

pub struct PostgresDatabase {
    pub name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("QUIVER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL must run at {url} for the registry tests (.ci/run starts it; set QUIVER_TEST_POSTGRES for another server): {e}"
        )
    })
}

impl PostgresDatabase {
    pub fn create() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "quiver_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin_url = admin_url();
        let mut client = admin(&admin_url);
        // One statement per call: (DROP|CREATE) DATABASE cannot run in a transaction.
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        PostgresDatabase { name, admin_url }
    }

    /// The database's URL, for `registry.url`.
    pub fn url(&self) -> String {
        let base = self
            .admin_url
            .rsplit_once('/')
            .map_or(self.admin_url.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }

    /// A client connected to the admin database (for `ALTER DATABASE` on this one).
    pub fn admin(&self) -> postgres::Client {
        admin(&self.admin_url)
    }

    /// A client connected to this database.
    pub fn client(&self) -> postgres::Client {
        admin(&self.url())
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
