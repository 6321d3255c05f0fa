//! The L-Bone suite against PostgreSQL: each scenario gets a private
//! cluster (initdb + pg_ctl on a free loopback port, fsync off) that is
//! stopped when the scenario ends. Without PostgreSQL's server binaries
//! (`apt-get install postgresql`) these tests fail; they never skip.

mod common;

use common::{scenarios, Db};

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                scenarios::$name(Db::postgres());
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
    removed_members,
    legacy_off_depot_is_polled_over_tls,
    depot_with_untrusted_certificate_is_down,
    depot_refusing_the_lbone_certificate_is_down,
    other_vo_bad_tls_port_does_not_take_the_depot_down,
    two_instances_poll_each_depot_once,
);
