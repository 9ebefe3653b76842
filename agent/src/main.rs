//! `agent`: the node daemon (stub until the agent issue lands).
fn main() {}
