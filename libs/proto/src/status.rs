//! The STATUS INQ body in IBP 1.4's tagged format.

use crate::{ProtoError, Rid};

/// Depot version written in `VS:`.
pub const STATUS_VERSION: &str = "1.4:0.4";

/// `VS:1.4:0.4 DT:1:2:3 NFU:1 RID:0 RT:1 CT:.. ST:.. UT:.. AT:.. CH:.. SH:.. UH:.. AH:.. DR:.. RE \n`.
///
/// `C*` is the configured capacity, `S*` what is served, `U*` what is used and
/// `A*` what can still be allocated; `*T` counts all allocations and `*H` the
/// HARD ones. `DR` is the maximum duration in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInfo {
    pub rid: Rid,
    /// `RT`: 1 disk, 2 memory.
    pub resource_type: u32,
    pub total_configured: u64,
    pub total_served: u64,
    pub total_used: u64,
    pub total_available: u64,
    pub hard_configured: u64,
    pub hard_served: u64,
    pub hard_used: u64,
    pub hard_available: u64,
    pub max_duration: i64,
}

impl StatusInfo {
    /// The body exactly as the IBP 1.4 depot writes it (sent after `1 <len> \n`).
    pub fn encode(&self) -> String {
        format!(
            "VS:{STATUS_VERSION} DT:1:2:3 NFU:1 RID:{} RT:{} CT:{} ST:{} UT:{} AT:{} CH:{} SH:{} UH:{} AH:{} DR:{} RE \n",
            self.rid,
            self.resource_type,
            self.total_configured,
            self.total_served,
            self.total_used,
            self.total_available,
            self.hard_configured,
            self.hard_served,
            self.hard_used,
            self.hard_available,
            self.max_duration
        )
    }

    /// Parses a body; unknown tags are skipped, missing ones are an error.
    pub fn parse(body: &str) -> Result<StatusInfo, ProtoError> {
        let get = |tag: &str| -> Option<&str> {
            body.split_ascii_whitespace()
                .find_map(|t| t.strip_prefix(tag).and_then(|v| v.strip_prefix(':')))
        };
        let num = |tag: &'static str| -> Result<u64, ProtoError> {
            get(tag)
                .ok_or(ProtoError::BadReply("missing status tag"))?
                .parse()
                .map_err(|_| ProtoError::NotNumber(tag))
        };
        let rid = num("RID")?;
        Ok(StatusInfo {
            rid: Rid(u32::try_from(rid).map_err(|_| ProtoError::OutOfRange("RID"))?),
            resource_type: u32::try_from(num("RT")?).map_err(|_| ProtoError::OutOfRange("RT"))?,
            total_configured: num("CT")?,
            total_served: num("ST")?,
            total_used: num("UT")?,
            total_available: num("AT")?,
            hard_configured: num("CH")?,
            hard_served: num("SH")?,
            hard_used: num("UH")?,
            hard_available: num("AH")?,
            max_duration: get("DR")
                .ok_or(ProtoError::BadReply("missing status tag"))?
                .parse()
                .map_err(|_| ProtoError::NotNumber("DR"))?,
        })
    }
}
