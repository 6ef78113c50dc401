//! Integration tests: the real server on a free port, a real HTTP client, SQLite and PostgreSQL.
//!
//! Every scenario runs against both databases (`sqlite_*` and `postgres_*` tests). PostgreSQL
//! tests need the service on 127.0.0.1:5432 (user postgres, trust auth): under `CI=true` a
//! missing service fails the test; locally it is skipped with a printed reason.

mod auth;
mod crash;
mod files;
mod folders;
mod jobs;
mod ops;
mod rabbit;
mod scaleout;
mod security;
mod support;
mod ws;

/// Generates one test per database for an async scenario `fn(Engine)`.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        pub(crate) mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Engine::Sqlite).await;
                }
            )*
        }
        pub(crate) mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::support::postgres_available().await {
                        super::$name($crate::support::Engine::Postgres).await;
                    }
                }
            )*
        }
    };
}
