//! The daemons' operations API ports: each has its own, so that an agent and a gateway
//! on one host both listen by default.

/// egret-gateway's default `[api].listen` port.
pub const GATEWAY_PORT: u16 = 9477;
/// egret-agent's default `[api].listen` port.
pub const AGENT_PORT: u16 = 9478;
