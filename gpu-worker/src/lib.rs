//! gpu-worker: the only gpu-airlock process that reads virtqueues.
//!
//! It maps guest memory from the descriptors the front-end sent (relayed by
//! the broker), runs the control and cursor queues with `vhost-user-backend`
//! and `virtio-queue`, and decodes every command. It is assumed compromised
//! the moment a guest sends it bytes, which is why it is a process of its
//! own.

pub mod backend;
pub mod chain;
pub mod device;
pub mod display;
pub mod edid;
pub mod link;
pub mod resources;
