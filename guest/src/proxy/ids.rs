//! The objects of one client's connection and their ids on both sides.
//!
//! A client-made object has an id in the client's space and another in the
//! host connection's: libwayland's server takes a new id only if it is a
//! free one no higher than the next, so the objects the proxy makes for
//! itself (a buffer's one-buffer pool) take ids in that sequence, as
//! libwayland's client would pick them, and every client-range id in every
//! message is translated. The server's own ids (from 0xff000000) are the
//! same on both sides.

use std::collections::{BTreeSet, HashMap, HashSet};

use wayland_backend::protocol::Interface;

use crate::globals;

/// Where the server's ids start.
pub const SERVER_IDS: u32 = 0xff00_0000;

/// What the proxy knows of an object: its interface and version.
#[derive(Debug, Clone, Copy)]
pub struct Object {
    pub interface: &'static Interface,
    pub version: u32,
}

/// A new id a side may not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("new {interface} id {id:#x} outside its side's range")]
    OutOfRange { interface: &'static str, id: u32 },
    #[error("new {interface} id {id} is in use")]
    InUse { interface: &'static str, id: u32 },
}

#[derive(Debug)]
pub struct Ids {
    /// Every object, by the client's id (server-made ones by their own).
    objects: HashMap<u32, Object>,
    /// Client-made objects: client id -> host id, and back.
    to_host: HashMap<u32, u32>,
    to_client: HashMap<u32, u32>,
    /// Host ids of the proxy's own objects.
    proxy_owned: HashSet<u32>,
    /// Host ids the server has freed, and the next never used.
    free: BTreeSet<u32>,
    next: u32,
}

impl Default for Ids {
    fn default() -> Self {
        Ids::new()
    }
}

impl Ids {
    /// A new connection's: wl_display is object 1 on both sides.
    pub fn new() -> Ids {
        let display = Object {
            interface: globals::display(),
            version: 1,
        };
        Ids {
            objects: HashMap::from([(1, display)]),
            to_host: HashMap::from([(1, 1)]),
            to_client: HashMap::from([(1, 1)]),
            proxy_owned: HashSet::new(),
            free: BTreeSet::new(),
            next: 2,
        }
    }

    /// Object `id` (a client id, or a server id).
    pub fn get(&self, id: u32) -> Option<Object> {
        self.objects.get(&id).copied()
    }

    /// Takes new id `id` for `object`, made by the client (`from_client`)
    /// or by the server: each side has its range, and a client's id must
    /// be free.
    pub fn add(&mut self, id: u32, object: Object, from_client: bool) -> Result<(), IdError> {
        let interface = object.interface.name;
        let in_range = if from_client {
            id != 0 && id < SERVER_IDS
        } else {
            id >= SERVER_IDS
        };
        if !in_range {
            return Err(IdError::OutOfRange { interface, id });
        }
        if from_client && self.objects.contains_key(&id) {
            return Err(IdError::InUse { interface, id });
        }
        self.objects.insert(id, object);
        Ok(())
    }

    /// Forgets a client object the host never saw (a wl_shm_pool, which
    /// stays in the guest).
    pub fn forget(&mut self, id: u32) {
        self.objects.remove(&id);
    }

    /// The next host id, as libwayland's client would pick it.
    fn next_host_id(&mut self) -> u32 {
        if let Some(id) = self.free.pop_first() {
            return id;
        }
        self.next += 1;
        self.next - 1
    }

    /// A host id for an object of the proxy's own, which the client never
    /// sees.
    pub fn proxy_owned(&mut self) -> u32 {
        let id = self.next_host_id();
        self.proxy_owned.insert(id);
        id
    }

    pub fn is_proxy_owned(&self, host: u32) -> bool {
        self.proxy_owned.contains(&host)
    }

    /// A host id for client object `client`.
    pub fn map(&mut self, client: u32) -> u32 {
        let host = self.next_host_id();
        self.to_host.insert(client, host);
        self.to_client.insert(host, client);
        host
    }

    /// Client id `client` as the host knows it.
    pub fn host_side(&self, client: u32) -> Option<u32> {
        if client >= SERVER_IDS {
            Some(client)
        } else {
            self.to_host.get(&client).copied()
        }
    }

    /// Host id `host` as the client knows it.
    pub fn client_side(&self, host: u32) -> Option<u32> {
        if host >= SERVER_IDS {
            Some(host)
        } else {
            self.to_client.get(&host).copied()
        }
    }

    /// The server's `wl_display.delete_id` of host id `host`: the id is
    /// free again; the client id to tell the client of, if it was one of
    /// the client's objects.
    pub fn deleted(&mut self, host: u32) -> Option<u32> {
        if host >= SERVER_IDS {
            return None;
        }
        self.free.insert(host);
        if self.proxy_owned.remove(&host) {
            return None;
        }
        let client = self.to_client.remove(&host)?;
        self.to_host.remove(&client);
        self.objects.remove(&client);
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wayland_client::protocol::{wl_output::WlOutput, wl_surface::WlSurface};
    use wayland_client::Proxy;

    fn surface() -> Object {
        Object {
            interface: WlSurface::interface(),
            version: 1,
        }
    }

    #[test]
    fn each_side_keeps_to_its_range_and_a_client_id_must_be_free() {
        let mut ids = Ids::new();
        assert!(ids.get(1).is_some(), "wl_display is object 1");
        ids.add(3, surface(), true).unwrap();
        assert_eq!(
            ids.add(3, surface(), true),
            Err(IdError::InUse {
                interface: "wl_surface",
                id: 3
            })
        );
        assert!(matches!(
            ids.add(0, surface(), true),
            Err(IdError::OutOfRange { .. })
        ));
        assert!(matches!(
            ids.add(SERVER_IDS, surface(), true),
            Err(IdError::OutOfRange { .. })
        ));
        let output = Object {
            interface: WlOutput::interface(),
            version: 4,
        };
        assert!(ids.add(7, output, false).is_err(), "the server's are high");
        ids.add(SERVER_IDS + 1, output, false).unwrap();
        assert_eq!(ids.host_side(SERVER_IDS + 1), Some(SERVER_IDS + 1));
        assert_eq!(ids.client_side(SERVER_IDS + 1), Some(SERVER_IDS + 1));
    }

    /// libwayland's server takes a new id only if it is free and no higher
    /// than the next: the host ids come in that sequence, whoever asks
    /// (the client's objects or the proxy's own), lowest freed one first.
    #[test]
    fn host_ids_are_taken_as_libwayland_would_and_translated_both_ways() {
        let mut ids = Ids::new();
        for client in [5, 9, 30] {
            ids.add(client, surface(), true).unwrap();
        }
        assert_eq!(ids.map(5), 2);
        assert_eq!(ids.proxy_owned(), 3);
        assert_eq!(ids.map(9), 4);
        assert_eq!((ids.host_side(9), ids.client_side(4)), (Some(4), Some(9)));
        assert_eq!(ids.host_side(30), None, "not yet on the host");
        // The server frees the client's 5 (host 2) and the proxy's 3.
        assert_eq!(ids.deleted(2), Some(5));
        assert!(ids.get(5).is_none() && ids.host_side(5).is_none());
        assert_eq!(ids.deleted(3), None, "the proxy's own: not the client's");
        assert!(!ids.is_proxy_owned(3));
        assert_eq!(ids.map(30), 2, "the lowest freed id first");
        assert_eq!(ids.proxy_owned(), 3);
        assert_eq!(ids.map(31), 5, "then the next never used");
        assert_eq!(ids.deleted(SERVER_IDS + 8), None);
    }
}
