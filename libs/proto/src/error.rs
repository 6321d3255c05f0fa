//! IBP error codes, numbered as in IBP 1.4's `ibp_errno.h`.

/// An IBP error code. The wire carries the negative number.
///
/// Every variant maps to its number in [`IbpError::code`] with an exhaustive
/// match, so a new variant cannot ship without a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IbpError {
    Generic,
    SockRead,
    SockWrite,
    CapNotFound,
    CapNotWrite,
    CapNotRead,
    CapNotManage,
    InvalidWriteCap,
    InvalidReadCap,
    InvalidManageCap,
    WrongCapFormat,
    CapAccessDenied,
    Connection,
    FileOpen,
    FileRead,
    FileWrite,
    FileAccess,
    FileSeekError,
    WouldExceedLimit,
    WouldDamageData,
    BadFormat,
    TypeNotSupported,
    ResourceUnavailable,
    Internal,
    InvalidCommand,
    WouldBlock,
    ProtocolVersion,
    LongDuration,
    WrongPassword,
    InvalidParameter,
    InvalidParameterHost,
    InvalidParameterPort,
    InvalidParameterDuration,
    InvalidParameterReliability,
    InvalidParameterType,
    InvalidParameterSize,
}

impl IbpError {
    /// Every code, in numeric order (for tests and documentation).
    pub const ALL: [IbpError; 36] = [
        IbpError::Generic,
        IbpError::SockRead,
        IbpError::SockWrite,
        IbpError::CapNotFound,
        IbpError::CapNotWrite,
        IbpError::CapNotRead,
        IbpError::CapNotManage,
        IbpError::InvalidWriteCap,
        IbpError::InvalidReadCap,
        IbpError::InvalidManageCap,
        IbpError::WrongCapFormat,
        IbpError::CapAccessDenied,
        IbpError::Connection,
        IbpError::FileOpen,
        IbpError::FileRead,
        IbpError::FileWrite,
        IbpError::FileAccess,
        IbpError::FileSeekError,
        IbpError::WouldExceedLimit,
        IbpError::WouldDamageData,
        IbpError::BadFormat,
        IbpError::TypeNotSupported,
        IbpError::ResourceUnavailable,
        IbpError::Internal,
        IbpError::InvalidCommand,
        IbpError::WouldBlock,
        IbpError::ProtocolVersion,
        IbpError::LongDuration,
        IbpError::WrongPassword,
        IbpError::InvalidParameter,
        IbpError::InvalidParameterHost,
        IbpError::InvalidParameterPort,
        IbpError::InvalidParameterDuration,
        IbpError::InvalidParameterReliability,
        IbpError::InvalidParameterType,
        IbpError::InvalidParameterSize,
    ];

    /// The (negative) number carried on the wire.
    pub fn code(self) -> i32 {
        match self {
            IbpError::Generic => -1,
            IbpError::SockRead => -2,
            IbpError::SockWrite => -3,
            IbpError::CapNotFound => -4,
            IbpError::CapNotWrite => -5,
            IbpError::CapNotRead => -6,
            IbpError::CapNotManage => -7,
            IbpError::InvalidWriteCap => -8,
            IbpError::InvalidReadCap => -9,
            IbpError::InvalidManageCap => -10,
            IbpError::WrongCapFormat => -11,
            IbpError::CapAccessDenied => -12,
            IbpError::Connection => -13,
            IbpError::FileOpen => -14,
            IbpError::FileRead => -15,
            IbpError::FileWrite => -16,
            IbpError::FileAccess => -17,
            IbpError::FileSeekError => -18,
            IbpError::WouldExceedLimit => -19,
            IbpError::WouldDamageData => -20,
            IbpError::BadFormat => -21,
            IbpError::TypeNotSupported => -22,
            IbpError::ResourceUnavailable => -23,
            IbpError::Internal => -24,
            IbpError::InvalidCommand => -25,
            IbpError::WouldBlock => -26,
            IbpError::ProtocolVersion => -27,
            IbpError::LongDuration => -28,
            IbpError::WrongPassword => -29,
            IbpError::InvalidParameter => -30,
            IbpError::InvalidParameterHost => -31,
            IbpError::InvalidParameterPort => -32,
            IbpError::InvalidParameterDuration => -33,
            IbpError::InvalidParameterReliability => -34,
            IbpError::InvalidParameterType => -35,
            IbpError::InvalidParameterSize => -36,
        }
    }

    /// The error with this wire number, if it is one we know.
    pub fn from_code(code: i32) -> Option<IbpError> {
        IbpError::ALL.iter().copied().find(|e| e.code() == code)
    }

    /// The name used in IBP 1.4's headers (`IBP_E_...`).
    pub fn name(self) -> &'static str {
        match self {
            IbpError::Generic => "IBP_E_GENERIC",
            IbpError::SockRead => "IBP_E_SOCK_READ",
            IbpError::SockWrite => "IBP_E_SOCK_WRITE",
            IbpError::CapNotFound => "IBP_E_CAP_NOT_FOUND",
            IbpError::CapNotWrite => "IBP_E_CAP_NOT_WRITE",
            IbpError::CapNotRead => "IBP_E_CAP_NOT_READ",
            IbpError::CapNotManage => "IBP_E_CAP_NOT_MANAGE",
            IbpError::InvalidWriteCap => "IBP_E_INVALID_WRITE_CAP",
            IbpError::InvalidReadCap => "IBP_E_INVALID_READ_CAP",
            IbpError::InvalidManageCap => "IBP_E_INVALID_MANAGE_CAP",
            IbpError::WrongCapFormat => "IBP_E_WRONG_CAP_FORMAT",
            IbpError::CapAccessDenied => "IBP_E_CAP_ACCESS_DENIED",
            IbpError::Connection => "IBP_E_CONNECTION",
            IbpError::FileOpen => "IBP_E_FILE_OPEN",
            IbpError::FileRead => "IBP_E_FILE_READ",
            IbpError::FileWrite => "IBP_E_FILE_WRITE",
            IbpError::FileAccess => "IBP_E_FILE_ACCESS",
            IbpError::FileSeekError => "IBP_E_FILE_SEEK_ERROR",
            IbpError::WouldExceedLimit => "IBP_E_WOULD_EXCEED_LIMIT",
            IbpError::WouldDamageData => "IBP_E_WOULD_DAMAGE_DATA",
            IbpError::BadFormat => "IBP_E_BAD_FORMAT",
            IbpError::TypeNotSupported => "IBP_E_TYPE_NOT_SUPPORTED",
            IbpError::ResourceUnavailable => "IBP_E_RSRC_UNAVAIL",
            IbpError::Internal => "IBP_E_INTERNAL",
            IbpError::InvalidCommand => "IBP_E_INVALID_CMD",
            IbpError::WouldBlock => "IBP_E_WOULD_BLOCK",
            IbpError::ProtocolVersion => "IBP_E_PROT_VERS",
            IbpError::LongDuration => "IBP_E_LONG_DURATION",
            IbpError::WrongPassword => "IBP_E_WRONG_PASSWD",
            IbpError::InvalidParameter => "IBP_E_INVALID_PARAMETER",
            IbpError::InvalidParameterHost => "IBP_E_INV_PAR_HOST",
            IbpError::InvalidParameterPort => "IBP_E_INV_PAR_PORT",
            IbpError::InvalidParameterDuration => "IBP_E_INV_PAR_ATDR",
            IbpError::InvalidParameterReliability => "IBP_E_INV_PAR_ATRL",
            IbpError::InvalidParameterType => "IBP_E_INV_PAR_ATTP",
            IbpError::InvalidParameterSize => "IBP_E_INV_PAR_SIZE",
        }
    }
}

impl IbpError {
    /// What the error means, in words, for people: the one table every
    /// message naming a depot's IBP error uses (through `Display`, which
    /// adds the name in parentheses).
    pub fn describe(self) -> &'static str {
        match self {
            IbpError::Generic => "the depot failed without saying why",
            IbpError::SockRead => "the depot could not read the request from its connection",
            IbpError::SockWrite => "the depot could not write its answer to its connection",
            IbpError::CapNotFound => {
                "the depot has no such allocation (it expired, was freed, or never existed)"
            }
            IbpError::CapNotWrite => {
                "the depot refuses: the capability given is not a write capability"
            }
            IbpError::CapNotRead => {
                "the depot refuses: the capability given is not a read capability"
            }
            IbpError::CapNotManage => {
                "the depot refuses: the capability given is not a manage capability"
            }
            IbpError::InvalidWriteCap => {
                "the depot refuses: the write capability does not match the allocation"
            }
            IbpError::InvalidReadCap => {
                "the depot refuses: the read capability does not match the allocation"
            }
            IbpError::InvalidManageCap => {
                "the depot refuses: the manage capability does not match the allocation"
            }
            IbpError::WrongCapFormat => "the depot refuses: the capability is malformed",
            IbpError::CapAccessDenied => {
                "the depot refuses: this capability, ticket or grant does not allow the operation"
            }
            IbpError::Connection => "the depot could not make a connection it needed",
            IbpError::FileOpen => "the depot could not open the allocation's storage",
            IbpError::FileRead => "the depot could not read the allocation's storage",
            IbpError::FileWrite => "the depot could not write the allocation's storage",
            IbpError::FileAccess => "the depot could not access the allocation's storage",
            IbpError::FileSeekError => "the depot could not seek in the allocation's storage",
            IbpError::WouldExceedLimit => {
                "the depot refuses: the allocation would exceed its limit for you"
            }
            IbpError::WouldDamageData => {
                "the depot refuses: the change would damage data already stored"
            }
            IbpError::BadFormat => "the depot refuses: the request is malformed",
            IbpError::TypeNotSupported => {
                "the depot refuses: it does not support this kind of storage"
            }
            IbpError::ResourceUnavailable => {
                "the depot refuses: the resource asked for is unavailable or unknown"
            }
            IbpError::Internal => "the depot failed with an internal error",
            IbpError::InvalidCommand => "the depot does not know this command",
            IbpError::WouldBlock => "the depot refuses: the operation would block",
            IbpError::ProtocolVersion => "the depot does not speak this protocol version",
            IbpError::LongDuration => "the depot refuses: the duration is longer than it allows",
            IbpError::WrongPassword => "the depot refuses: wrong password",
            IbpError::InvalidParameter => "the depot refuses: a parameter is out of range",
            IbpError::InvalidParameterHost => "the depot refuses: the host given is invalid",
            IbpError::InvalidParameterPort => "the depot refuses: the port given is invalid",
            IbpError::InvalidParameterDuration => {
                "the depot refuses: the duration given is invalid"
            }
            IbpError::InvalidParameterReliability => {
                "the depot refuses: the reliability given is invalid"
            }
            IbpError::InvalidParameterType => {
                "the depot refuses: the storage type given is invalid"
            }
            IbpError::InvalidParameterSize => "the depot refuses: the size given is invalid",
        }
    }
}

/// `the depot refuses: ... (IBP_E_...)`: the words of
/// [`IbpError::describe`], then the name of IBP 1.4's headers.
impl std::fmt::Display for IbpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.describe(), self.name())
    }
}

impl std::error::Error for IbpError {}

#[cfg(test)]
mod tests {
    use super::IbpError;
    use std::collections::HashSet;

    /// Every code of IBP 1.4 (-1 to -36) is in `ALL` and has its own
    /// words in the table; `Display` gives the words and the name, never
    /// a bare number.
    #[test]
    fn every_code_has_its_own_words_and_its_name() {
        let mut seen_words = HashSet::new();
        let mut seen_codes = HashSet::new();
        for code in -36..=-1 {
            let e = IbpError::from_code(code).unwrap_or_else(|| panic!("code {code} unknown"));
            assert_eq!(e.code(), code);
            assert!(seen_codes.insert(code));
            let words = e.describe();
            assert!(words.starts_with("the depot "), "{e:?}: {words}");
            assert!(!words.contains("IBP_E"), "{e:?}: {words}");
            assert!(seen_words.insert(words), "{e:?} shares its words: {words}");
            let shown = e.to_string();
            assert_eq!(shown, format!("{words} ({})", e.name()));
            assert!(!shown.contains(&code.to_string()), "{shown}");
        }
        assert_eq!(seen_codes.len(), IbpError::ALL.len());
        assert_eq!(IbpError::from_code(-37), None);
        assert_eq!(
            IbpError::WouldExceedLimit.to_string(),
            "the depot refuses: the allocation would exceed its limit for you \
             (IBP_E_WOULD_EXCEED_LIMIT)"
        );
    }
}
