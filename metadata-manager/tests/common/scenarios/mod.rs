//! The metadata manager suite, run once per database (tests/sqlite.rs,
//! tests/postgres.rs). Each scenario starts its own manager and database
//! and talks to it over mutual TLS as several users of two VOs.

mod access;
mod files;
mod input;
mod names;
mod quota;
mod service;
mod versions;

pub use access::{
    default_acl_inheritance, groups_vos_and_cross_vo, revocation, rights_granted_and_refused,
};
pub use files::{concurrent_writers, namespace, tickets};
pub use input::{authentication, bad_input};
pub use names::{display_names, names};
// The memory and default-size scenarios run in the SQLite suite only.
#[allow(unused_imports)]
pub use quota::{
    concurrent_large_puts_keep_memory_and_disk_bounded,
    exnode_over_the_default_max_exnode_is_refused,
    member_cannot_grow_the_database_past_their_quota, one_member_cannot_hold_the_put_budget,
    vo_cannot_grow_the_database_past_its_quota,
};
// replicas_share_database runs in the PostgreSQL suite only.
#[allow(unused_imports)]
pub use service::{
    keys, replicas_share_database, shutdown_is_prompt, usage, usage_of_another_vo_is_refused,
};
pub use versions::{acknowledged_puts_survive_sigkill, versions_and_retention};
