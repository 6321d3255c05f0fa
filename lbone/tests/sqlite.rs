//! The L-Bone suite against SQLite (the default database): the real `lbone`
//! binary, real `ibp-depot` processes, a test PKI with proxies carrying VO
//! attributes. Scenarios are in common/scenarios.rs.

mod common;

use common::{scenarios, Db};

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                scenarios::$name(Db::sqlite());
            }
        )*
    };
}

suite!(
    liveness_kill_and_restart,
    registration_rights,
    vo_isolation_and_revocation,
    grants,
    location_ordering,
    hanging_depot_does_not_stall_polling,
    more_than_exist,
    status_page,
    lors_cli,
    shutdown_is_prompt,
);
