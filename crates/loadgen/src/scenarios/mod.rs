//! The scenarios, one module each. Each opens its clients, runs bounded in
//! count and time, and returns a [`crate::report::Report`].
//!
//! - [`idle`]: open N connections and hold them (connect rate, connect→welcome).
//! - [`unicast`]: open-loop unicast between clients on different targets.
//! - [`fanout`]: group sends to groups split across targets.
//! - [`broadcast`]: one broadcast at a time to N clients of a bizCode.
//! - [`churn`]: connects and disconnects at a fixed rate; presence drift.
//! - [`storm`]: an edge dies under its clients, which all reconnect.

pub(crate) mod broadcast;
pub(crate) mod churn;
pub(crate) mod fanout;
pub(crate) mod idle;
pub(crate) mod storm;
pub(crate) mod unicast;
