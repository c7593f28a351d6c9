//! A small compositor for the tests that weston's headless backend cannot
//! serve (it has no seat, so no keymap and no clipboard), built on
//! wayland-server: a wl_seat whose keyboard sends [`keymap`] in a memfd,
//! and a wl_data_device_manager that offers [`SELECTION`] as the
//! clipboard to each data device and, when a client sets a selection of
//! its own, asks it for the text through a pipe and keeps what came.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use wayland_server::protocol::{
    wl_data_device::{self, WlDataDevice},
    wl_data_device_manager::{self, WlDataDeviceManager},
    wl_data_offer::{self, WlDataOffer},
    wl_data_source::{self, WlDataSource},
    wl_keyboard::{self, WlKeyboard},
    wl_pointer::WlPointer,
    wl_seat::{self, WlSeat},
    wl_touch::WlTouch,
};
use wayland_server::{
    Client, DataInit, Dispatch, Display, DisplayHandle, GlobalDispatch, ListeningSocket, New,
    Resource,
};

use crate::TempDir;

/// The clipboard text the compositor offers.
pub const SELECTION: &str = "the host's clipboard, through a cross-domain read pipe";
/// The clipboard's MIME type.
pub const MIME: &str = "text/plain;charset=utf-8";

/// The keymap the keyboard sends: more than a page, so that it crosses as
/// a multi-page blob, and a function of its position.
pub fn keymap() -> Vec<u8> {
    let mut v: Vec<u8> = b"xkb_keymap { gpu-airlock test keymap };\n".to_vec();
    v.extend((0..6000u32).map(|i| b'a' + (i * 7 % 26) as u8));
    v.push(0);
    v
}

/// FNV-1a of `bytes`: what the guest client prints of what it received.
pub fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

struct State {
    /// Texts clients gave for their selections.
    received: Arc<Mutex<Vec<String>>>,
}

struct Nobody;
impl ClientData for Nobody {
    fn disconnected(&self, _: ClientId, _: DisconnectReason) {}
}

impl GlobalDispatch<WlSeat, ()> for State {
    fn bind(
        _: &mut State,
        _: &DisplayHandle,
        _: &Client,
        seat: New<WlSeat>,
        _: &(),
        init: &mut DataInit<'_, State>,
    ) {
        let seat = init.init(seat, ());
        seat.capabilities(wl_seat::Capability::Keyboard);
        if seat.version() >= 2 {
            seat.name("airlock-test-seat".into());
        }
    }
}

impl Dispatch<WlSeat, ()> for State {
    fn request(
        _: &mut State,
        _: &Client,
        _: &WlSeat,
        request: wl_seat::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, State>,
    ) {
        match request {
            wl_seat::Request::GetKeyboard { id } => {
                let keyboard = init.init(id, ());
                let bytes = keymap();
                let fd = nix::sys::memfd::memfd_create(
                    c"test-keymap",
                    nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                )
                .unwrap();
                let mut file = std::fs::File::from(fd);
                file.write_all(&bytes).unwrap();
                keyboard.keymap(
                    wl_keyboard::KeymapFormat::XkbV1,
                    file.as_fd(),
                    bytes.len() as u32,
                );
            }
            wl_seat::Request::GetPointer { id } => {
                init.init(id, ());
            }
            wl_seat::Request::GetTouch { id } => {
                init.init(id, ());
            }
            _ => {}
        }
    }
}

impl Dispatch<WlKeyboard, ()> for State {
    fn request(
        _: &mut State,
        _: &Client,
        _: &WlKeyboard,
        _: wl_keyboard::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, State>,
    ) {
    }
}
impl Dispatch<WlPointer, ()> for State {
    fn request(
        _: &mut State,
        _: &Client,
        _: &WlPointer,
        _: wayland_server::protocol::wl_pointer::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, State>,
    ) {
    }
}
impl Dispatch<WlTouch, ()> for State {
    fn request(
        _: &mut State,
        _: &Client,
        _: &WlTouch,
        _: wayland_server::protocol::wl_touch::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, State>,
    ) {
    }
}

impl GlobalDispatch<WlDataDeviceManager, ()> for State {
    fn bind(
        _: &mut State,
        _: &DisplayHandle,
        _: &Client,
        m: New<WlDataDeviceManager>,
        _: &(),
        init: &mut DataInit<'_, State>,
    ) {
        init.init(m, ());
    }
}

impl Dispatch<WlDataDeviceManager, ()> for State {
    fn request(
        _: &mut State,
        client: &Client,
        _: &WlDataDeviceManager,
        request: wl_data_device_manager::Request,
        _: &(),
        dh: &DisplayHandle,
        init: &mut DataInit<'_, State>,
    ) {
        match request {
            wl_data_device_manager::Request::CreateDataSource { id } => {
                init.init(id, ());
            }
            wl_data_device_manager::Request::GetDataDevice { id, .. } => {
                let device = init.init(id, ());
                let offer = client
                    .create_resource::<WlDataOffer, (), State>(dh, device.version(), ())
                    .unwrap();
                device.data_offer(&offer);
                offer.offer(MIME.into());
                device.selection(Some(&offer));
            }
            _ => {}
        }
    }
}

impl Dispatch<WlDataOffer, ()> for State {
    fn request(
        _: &mut State,
        _: &Client,
        _: &WlDataOffer,
        request: wl_data_offer::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, State>,
    ) {
        if let wl_data_offer::Request::Receive { fd, .. } = request {
            // The write end of the host's read pipe: write and close.
            let _ = std::fs::File::from(fd).write_all(SELECTION.as_bytes());
        }
    }
}

impl Dispatch<WlDataDevice, ()> for State {
    fn request(
        state: &mut State,
        _: &Client,
        _: &WlDataDevice,
        request: wl_data_device::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, State>,
    ) {
        if let wl_data_device::Request::SetSelection {
            source: Some(source),
            ..
        } = request
        {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            source.send(MIME.into(), write.as_fd());
            drop(write);
            let received = state.received.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::fs::File::from(read).read_to_string(&mut text);
                received.lock().unwrap().push(text);
            });
        }
    }
}

impl Dispatch<WlDataSource, ()> for State {
    fn request(
        _: &mut State,
        _: &Client,
        _: &WlDataSource,
        _: wl_data_source::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, State>,
    ) {
    }
}

/// The compositor, serving its socket on a thread of its own.
pub struct TestCompositor {
    pub socket: PathBuf,
    /// What clients' selections held, in order.
    pub received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl TestCompositor {
    pub fn start() -> TestCompositor {
        let dir = TempDir::new("test-compositor");
        let socket = dir.0.join("wayland-test");
        let listener =
            ListeningSocket::bind_absolute(socket.clone()).expect("bind the test compositor");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_received, thread_stop) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut display: Display<State> = Display::new().unwrap();
            let dh = display.handle();
            dh.create_global::<State, WlSeat, ()>(5, ());
            dh.create_global::<State, WlDataDeviceManager, ()>(3, ());
            let mut state = State {
                received: thread_received,
            };
            while !thread_stop.load(Ordering::Relaxed) {
                if let Ok(Some(stream)) = listener.accept() {
                    let _ = display.handle().insert_client(stream, Arc::new(Nobody));
                }
                let _ = display.dispatch_clients(&mut state);
                let _ = display.flush_clients();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        TestCompositor {
            socket,
            received,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn arg(&self) -> String {
        self.socket.display().to_string()
    }
}

impl Drop for TestCompositor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
