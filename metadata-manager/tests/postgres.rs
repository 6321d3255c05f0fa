//! The metadata manager suite against PostgreSQL: each scenario gets a
//! private cluster (initdb + pg_ctl on a free loopback port, fsync off)
//! that is stopped when the scenario ends. Without PostgreSQL's server
//! binaries (`apt-get install postgresql`) these tests fail; they never
//! skip. `replicas_share_database` runs here only: two server processes
//! on one database.

mod common;

use common::{run, scenarios, Db};

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(scenarios::$name(Db::postgres()));
            }
        )*
    };
}

suite!(
    rights_granted_and_refused,
    groups_vos_and_cross_vo,
    default_acl_inheritance,
    revocation,
    concurrent_writers,
    tickets,
    bad_input,
    authentication,
    namespace,
    keys,
    names,
    display_names,
    usage,
    usage_of_another_vo_is_refused,
    member_cannot_grow_the_database_past_their_quota,
    vo_cannot_grow_the_database_past_its_quota,
    shutdown_is_prompt,
    versions_and_retention,
    acknowledged_puts_survive_sigkill,
    replicas_share_database,
);
