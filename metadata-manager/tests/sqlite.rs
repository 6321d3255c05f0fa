//! The metadata manager suite against SQLite (the default database): the
//! real `metadata-manager` binary, a test PKI with proxies carrying VO
//! attributes and groups, clients over mutual TLS. Scenarios are in
//! common/scenarios.rs.

mod common;

use common::{run, scenarios, Db};

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(scenarios::$name(Db::sqlite()));
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
    usage,
    shutdown_is_prompt,
);
