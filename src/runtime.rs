//! The top layer: the process. [`server`] binds the listeners, starts the
//! worker threads and the background tasks ([`tasks`]), and stops them in order;
//! [`reload`] swaps what SIGHUP may change; [`telemetry`] sets up logging.
//! It wires every layer below together and nothing imports it.

mod connection;
pub mod reload;
pub mod server;
pub(crate) mod tasks;
pub mod telemetry;
