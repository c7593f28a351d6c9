//! The front-end's side of the vhost-user-gpu display protocol, as QEMU
//! plays it: the harness sends VHOST_USER_GPU_SET_SOCKET with one end of a
//! socket pair and serves the other end here, answering the back-end's
//! requests and keeping a framebuffer per scanout that UPDATE messages are
//! composed into, exactly as QEMU's `vhost_user_gpu_handle_display` does.
//!
//! The `vhost` crate implements only the back-end's side, so the 12-byte
//! message header is read here by hand; the bodies are the crate's types.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use vhost::vhost_user::gpu_message::{
    GpuBackendReq, VhostUserGpuCursorPos, VhostUserGpuCursorUpdate, VhostUserGpuEdidRequest,
    VhostUserGpuScanout, VhostUserGpuUpdate, VirtioGpuRespDisplayInfo, VirtioGpuRespGetEdid,
};
use vm_memory::ByteValued;

const REPLY: u32 = 0x4;
const PROTOCOL_F_EDID: u64 = 1;
const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
const RESP_OK_EDID: u32 = 0x1104;

/// What the display offers.
#[derive(Debug, Clone)]
pub struct DisplayConfig {
    /// Each scanout's preferred size; (0, 0) is a disabled output.
    pub modes: Vec<(u32, u32)>,
    /// Whether GET_PROTOCOL_FEATURES offers EDID.
    pub edid: bool,
}

/// The EDID the display hands out for scanout `i`: recognizable bytes.
pub fn display_edid(scanout: u32) -> Vec<u8> {
    let mut edid = b"harness display EDID for scanout ".to_vec();
    edid.push(b'0' + scanout as u8);
    edid.resize(128, 0x5a);
    edid
}

/// One scanout as the display shows it: x8r8g8b8 pixels, 4 bytes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surface {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Everything the back-end sent, in order, as the display understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    GetProtocolFeatures,
    SetProtocolFeatures(u64),
    GetDisplayInfo,
    GetEdid(u32),
    Scanout {
        scanout: u32,
        width: u32,
        height: u32,
    },
    Update {
        scanout: u32,
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    },
    CursorPos {
        scanout: u32,
        x: u32,
        y: u32,
    },
    CursorHide {
        scanout: u32,
    },
    CursorUpdate {
        pos: (u32, u32, u32),
        hot: (u32, u32),
        image: Vec<u8>,
    },
    /// Something the display does not know or could not parse.
    Bad(String),
    /// The back-end closed the socket.
    Closed,
}

#[derive(Default)]
struct State {
    events: Vec<Event>,
    surfaces: Vec<Option<Surface>>,
}

/// The display, serving its socket on a thread of its own.
pub struct DisplayPeer {
    state: Arc<(Mutex<State>, Condvar)>,
}

impl DisplayPeer {
    /// Serves `sock` (the front-end's end of the display socket pair).
    pub fn serve(sock: UnixStream, config: DisplayConfig) -> DisplayPeer {
        let state = Arc::new((
            Mutex::new(State {
                events: Vec::new(),
                surfaces: vec![None; config.modes.len()],
            }),
            Condvar::new(),
        ));
        let shared = state.clone();
        thread::spawn(move || serve(sock, config, shared));
        DisplayPeer { state }
    }

    pub fn events(&self) -> Vec<Event> {
        self.state.0.lock().unwrap().events.clone()
    }

    /// Waits until `pred` holds for the events so far; returns them.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let (lock, cond) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut state = lock.lock().unwrap();
        while !pred(&state.events) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the display did not see what the test waited for: {:?}",
                state.events
            );
            state = cond.wait_timeout(state, left).unwrap().0;
        }
        state.events.clone()
    }

    /// Waits until the display has seen at least `n` events.
    pub fn wait_events(&self, n: usize) -> Vec<Event> {
        self.wait_for(Duration::from_secs(10), |e| e.len() >= n)
    }

    /// What scanout `i` shows.
    pub fn surface(&self, i: usize) -> Option<Surface> {
        self.state.0.lock().unwrap().surfaces[i].clone()
    }
}

fn read_exact_or_closed(sock: &mut UnixStream, buf: &mut [u8]) -> bool {
    sock.read_exact(buf).is_ok()
}

fn body<T: ByteValued + Default>(payload: &[u8]) -> Option<T> {
    let mut v = T::default();
    let n = std::mem::size_of::<T>();
    v.as_mut_slice().copy_from_slice(payload.get(..n)?);
    Some(v)
}

fn reply(sock: &mut UnixStream, request: u32, payload: &[u8]) {
    let mut msg = Vec::with_capacity(12 + payload.len());
    msg.extend_from_slice(&request.to_ne_bytes());
    msg.extend_from_slice(&REPLY.to_ne_bytes());
    msg.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    msg.extend_from_slice(payload);
    let _ = sock.write_all(&msg);
}

fn serve(mut sock: UnixStream, config: DisplayConfig, state: Arc<(Mutex<State>, Condvar)>) {
    let record = |event: Event| {
        let (lock, cond) = &*state;
        lock.lock().unwrap().events.push(event);
        cond.notify_all();
    };
    loop {
        let mut hdr = [0u8; 12];
        if !read_exact_or_closed(&mut sock, &mut hdr) {
            record(Event::Closed);
            return;
        }
        let word = |i: usize| u32::from_ne_bytes(hdr[i * 4..i * 4 + 4].try_into().unwrap());
        let (request, size) = (word(0), word(2) as usize);
        let mut payload = vec![0u8; size];
        if !read_exact_or_closed(&mut sock, &mut payload) {
            record(Event::Closed);
            return;
        }
        match GpuBackendReq::try_from(request) {
            Ok(GpuBackendReq::GET_PROTOCOL_FEATURES) => {
                record(Event::GetProtocolFeatures);
                let features = if config.edid { PROTOCOL_F_EDID } else { 0 };
                reply(&mut sock, request, &features.to_ne_bytes());
            }
            Ok(GpuBackendReq::SET_PROTOCOL_FEATURES) => {
                let v = payload
                    .get(..8)
                    .map(|b| u64::from_ne_bytes(b.try_into().unwrap()));
                record(
                    v.map_or(Event::Bad("short SET_PROTOCOL_FEATURES".into()), |v| {
                        Event::SetProtocolFeatures(v)
                    }),
                );
            }
            Ok(GpuBackendReq::GET_DISPLAY_INFO) => {
                record(Event::GetDisplayInfo);
                let mut info = VirtioGpuRespDisplayInfo::default();
                info.hdr.type_ = RESP_OK_DISPLAY_INFO;
                for (mode, (w, h)) in info.pmodes.iter_mut().zip(&config.modes) {
                    mode.r.width = *w;
                    mode.r.height = *h;
                    mode.enabled = u32::from(*w > 0);
                }
                reply(&mut sock, request, info.as_slice());
            }
            Ok(GpuBackendReq::GET_EDID) => {
                let Some(req) = body::<VhostUserGpuEdidRequest>(&payload) else {
                    record(Event::Bad("short GET_EDID".into()));
                    continue;
                };
                record(Event::GetEdid(req.scanout_id));
                // As QEMU: no answer at all for a scanout it does not have.
                if req.scanout_id as usize >= config.modes.len() {
                    continue;
                }
                let mut resp = VirtioGpuRespGetEdid::default();
                resp.hdr.type_ = RESP_OK_EDID;
                let edid = display_edid(req.scanout_id);
                resp.size = edid.len() as u32;
                resp.edid[..edid.len()].copy_from_slice(&edid);
                reply(&mut sock, request, resp.as_slice());
            }
            Ok(GpuBackendReq::SCANOUT) => {
                let Some(m) = body::<VhostUserGpuScanout>(&payload) else {
                    record(Event::Bad("short SCANOUT".into()));
                    continue;
                };
                {
                    let mut s = state.0.lock().unwrap();
                    if let Some(slot) = s.surfaces.get_mut(m.scanout_id as usize) {
                        *slot = (m.width > 0).then(|| Surface {
                            width: m.width,
                            height: m.height,
                            pixels: vec![0; (m.width * m.height * 4) as usize],
                        });
                    }
                }
                record(Event::Scanout {
                    scanout: m.scanout_id,
                    width: m.width,
                    height: m.height,
                });
            }
            Ok(GpuBackendReq::UPDATE) => {
                let Some(m) = body::<VhostUserGpuUpdate>(&payload) else {
                    record(Event::Bad("short UPDATE".into()));
                    continue;
                };
                let data = &payload[std::mem::size_of::<VhostUserGpuUpdate>()..];
                let event = Event::Update {
                    scanout: m.scanout_id,
                    x: m.x,
                    y: m.y,
                    width: m.width,
                    height: m.height,
                };
                let problem = compose(&state, &m, data);
                record(problem.map_or(event, Event::Bad));
            }
            Ok(GpuBackendReq::CURSOR_POS) | Ok(GpuBackendReq::CURSOR_POS_HIDE) => {
                let Some(p) = body::<VhostUserGpuCursorPos>(&payload) else {
                    record(Event::Bad("short CURSOR_POS".into()));
                    continue;
                };
                record(if request == GpuBackendReq::CURSOR_POS as u32 {
                    Event::CursorPos {
                        scanout: p.scanout_id,
                        x: p.x,
                        y: p.y,
                    }
                } else {
                    Event::CursorHide {
                        scanout: p.scanout_id,
                    }
                });
            }
            Ok(GpuBackendReq::CURSOR_UPDATE) => {
                let Some(c) = body::<VhostUserGpuCursorUpdate>(&payload) else {
                    record(Event::Bad("short CURSOR_UPDATE".into()));
                    continue;
                };
                let image = payload[std::mem::size_of::<VhostUserGpuCursorUpdate>()..].to_vec();
                record(Event::CursorUpdate {
                    pos: (c.pos.scanout_id, c.pos.x, c.pos.y),
                    hot: (c.hot_x, c.hot_y),
                    image,
                });
            }
            _ => record(Event::Bad(format!("request {request} of {size} bytes"))),
        }
    }
}

/// Composes an UPDATE into its scanout's surface, as QEMU does; says what
/// is wrong with it instead if anything is.
fn compose(
    state: &Arc<(Mutex<State>, Condvar)>,
    m: &VhostUserGpuUpdate,
    data: &[u8],
) -> Option<String> {
    let mut s = state.0.lock().unwrap();
    let Some(Some(surface)) = s.surfaces.get_mut(m.scanout_id as usize) else {
        return Some(format!("UPDATE of scanout {} before SCANOUT", m.scanout_id));
    };
    let (x, y, w, h) = (
        m.x as usize,
        m.y as usize,
        m.width as usize,
        m.height as usize,
    );
    if x + w > surface.width as usize || y + h > surface.height as usize {
        return Some(format!(
            "UPDATE {m:?} outside a {}x{} scanout",
            surface.width, surface.height
        ));
    }
    if data.len() != w * h * 4 {
        return Some(format!("UPDATE {m:?} with {} bytes of pixels", data.len()));
    }
    let stride = surface.width as usize * 4;
    for row in 0..h {
        let at = (y + row) * stride + x * 4;
        surface.pixels[at..at + w * 4].copy_from_slice(&data[row * w * 4..(row + 1) * w * 4]);
    }
    None
}
