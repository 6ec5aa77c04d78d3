//! Daily jobs that stand apart from the path of an approach: today, the warning before an
//! OAuth2 client secret lapses ([`secret_expiry`]). The daemon runs them on its clock; the
//! CLI's `check` reads the same rules.
//!
//! A job may use the config, the store and the outbox; nothing in the pipeline imports a job.

pub mod secret_expiry;
