//! The API calls, parsed once from the path: `POST /api/websocket/<call>`.
//!
//! `register` stands apart: its body names the bizCode it registers, and
//! no registration is required for it. Every other call serves the tenant
//! the headers name ([`Op`]).

/// One API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `register`: registers a bizCode.
    Register,
    /// A call that serves the tenant the headers name.
    Tenant(Op),
}

/// The calls that serve the tenant of the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `send_to_client`: a unicast.
    SendToClient,
    /// `send_to_clients`: one message to a list of clients.
    SendToClients,
    /// `send_to_group`: to a group's members.
    SendToGroup,
    /// `send_to_system`: to every client of the bizCode.
    SendToSystem,
    /// `bind_to_group`: adds a client to a group.
    BindToGroup,
    /// `unbind_from_group`: removes a client from a group.
    UnbindFromGroup,
    /// `get_online_list`: clientIds online (in a group).
    GetOnlineList,
    /// `get_all_groups`: groups with member counts.
    GetAllGroups,
    /// `close_client`: closes a client's connection (4000).
    CloseClient,
    /// `get_history`: what the bizCode's log holds (SPEC §7).
    GetHistory,
    /// `delete_history`: empties the bizCode's log (SPEC §7).
    DeleteHistory,
    /// `set_limits`: the bizCode's own limits on each edge (global keys
    /// only).
    SetLimits,
    /// `get_limits`: the bizCode's own limits.
    GetLimits,
    /// `get_node_counts`: the nodes hosting the bizCode's clients, with
    /// how many each.
    GetNodeCounts,
    /// `set_webhook`: sets, changes or removes the bizCode's webhook
    /// (global keys only).
    SetWebhook,
    /// `get_webhook`: the bizCode's webhook, without its secret (global
    /// keys only).
    GetWebhook,
}

impl Call {
    /// Every call, in the order the fuzz target's first byte picks them
    /// (kept, so the saved corpus keeps its meaning).
    pub(crate) const ALL: [Self; 17] = [
        Self::Register,
        Self::Tenant(Op::SendToClient),
        Self::Tenant(Op::SendToClients),
        Self::Tenant(Op::SendToGroup),
        Self::Tenant(Op::SendToSystem),
        Self::Tenant(Op::BindToGroup),
        Self::Tenant(Op::UnbindFromGroup),
        Self::Tenant(Op::GetOnlineList),
        Self::Tenant(Op::GetAllGroups),
        Self::Tenant(Op::CloseClient),
        Self::Tenant(Op::GetHistory),
        Self::Tenant(Op::DeleteHistory),
        Self::Tenant(Op::SetLimits),
        Self::Tenant(Op::GetLimits),
        Self::Tenant(Op::GetNodeCounts),
        Self::Tenant(Op::SetWebhook),
        Self::Tenant(Op::GetWebhook),
    ];

    /// The call a path segment names, if any.
    pub(crate) fn parse(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == segment)
    }

    /// The path segment (also the `call` label of the API metrics).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Tenant(Op::SendToClient) => "send_to_client",
            Self::Tenant(Op::SendToClients) => "send_to_clients",
            Self::Tenant(Op::SendToGroup) => "send_to_group",
            Self::Tenant(Op::SendToSystem) => "send_to_system",
            Self::Tenant(Op::BindToGroup) => "bind_to_group",
            Self::Tenant(Op::UnbindFromGroup) => "unbind_from_group",
            Self::Tenant(Op::GetOnlineList) => "get_online_list",
            Self::Tenant(Op::GetAllGroups) => "get_all_groups",
            Self::Tenant(Op::CloseClient) => "close_client",
            Self::Tenant(Op::GetHistory) => "get_history",
            Self::Tenant(Op::DeleteHistory) => "delete_history",
            Self::Tenant(Op::SetLimits) => "set_limits",
            Self::Tenant(Op::GetLimits) => "get_limits",
            Self::Tenant(Op::GetNodeCounts) => "get_node_counts",
            Self::Tenant(Op::SetWebhook) => "set_webhook",
            Self::Tenant(Op::GetWebhook) => "get_webhook",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_parses_back_from_its_name() {
        for c in Call::ALL {
            assert_eq!(Call::parse(c.name()), Some(c));
        }
        for unknown in ["", "unknown", "Register", "register/", "send_to_client "] {
            assert_eq!(Call::parse(unknown), None, "{unknown:?}");
        }
    }
}
