//! Surfaces and commits: which buffer a surface shows, the damage of each
//! commit in buffer coordinates, and which buffers it leaves stale. Each
//! buffer keeps the damage of the frames it missed, so a client that
//! double-buffers gets both of its buffers right, and a buffer is copied
//! whole only at its first use.

use std::collections::HashMap;

use wayland_client::protocol::wl_surface;

use crate::wire::Arg;

/// Damage rectangles kept per buffer before they become the whole buffer.
const MAX_RECTS: usize = 16;
/// Damage requests kept per commit before they become the whole surface.
const MAX_DAMAGE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

impl Rect {
    fn from_args(a: &[Arg]) -> Rect {
        let int = |i: usize| i64::from(a.get(i).map_or(0, Arg::int));
        Rect {
            x: int(0),
            y: int(1),
            w: int(2),
            h: int(3),
        }
    }

    /// Covers any surface.
    const EVERYTHING: Rect = Rect {
        x: 0,
        y: 0,
        w: i64::MAX / 4,
        h: i64::MAX / 4,
    };
}

/// What of a buffer's host image is behind the client's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    All,
    Rects(Vec<Rect>),
}

impl Stale {
    pub fn add(&mut self, more: &Stale) {
        match (&mut *self, more) {
            (Stale::All, _) => {}
            (_, Stale::All) => *self = Stale::All,
            (Stale::Rects(r), Stale::Rects(m)) => {
                for rect in m {
                    if !r.contains(rect) {
                        r.push(*rect);
                    }
                }
                if r.len() > MAX_RECTS {
                    *self = Stale::All;
                }
            }
        }
    }
}

#[derive(Debug)]
struct Surface {
    /// A pending attach: the buffer (None for a null one).
    attached: Option<Option<u32>>,
    current: Option<u32>,
    damage: Vec<Rect>,
    damage_buffer: Vec<Rect>,
    scale: i64,
    transform: i64,
    viewport: bool,
    /// The buffers this surface has shown, which its damage makes stale.
    shown: Vec<u32>,
}

impl Default for Surface {
    fn default() -> Self {
        Surface {
            attached: None,
            current: None,
            damage: Vec::new(),
            damage_buffer: Vec::new(),
            scale: 1,
            transform: 0,
            viewport: false,
            shown: Vec::new(),
        }
    }
}

/// What a commit asks of the buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The buffer the surface shows now, and its damage in buffer
    /// coordinates.
    pub buffer: u32,
    pub damage: Stale,
    /// The other buffers the surface has shown: the damage makes them
    /// stale.
    pub others: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct Surfaces {
    surfaces: HashMap<u32, Surface>,
}

impl Surfaces {
    /// A `wl_surface` request on `id` (`opcode`, `args`); at a commit, what
    /// it asks of the buffers (`exists` says which buffer ids are live).
    pub fn request(
        &mut self,
        id: u32,
        opcode: u16,
        args: &[Arg],
        exists: impl Fn(u32) -> bool,
    ) -> Option<Commit> {
        if opcode == wl_surface::REQ_DESTROY_OPCODE {
            self.surfaces.remove(&id);
            return None;
        }
        let surface = self.surfaces.entry(id).or_default();
        let first = || args.first().map_or(0, Arg::int);
        match opcode {
            wl_surface::REQ_ATTACH_OPCODE => {
                let buffer = args.first().map_or(0, Arg::uint);
                surface.attached = Some(Some(buffer).filter(|b| *b != 0));
            }
            wl_surface::REQ_DAMAGE_OPCODE | wl_surface::REQ_DAMAGE_BUFFER_OPCODE => {
                let list = match opcode {
                    wl_surface::REQ_DAMAGE_OPCODE => &mut surface.damage,
                    _ => &mut surface.damage_buffer,
                };
                if list.len() < MAX_DAMAGE {
                    list.push(Rect::from_args(args));
                } else if surface.damage.last() != Some(&Rect::EVERYTHING) {
                    // Past the bound: the whole surface, once.
                    surface.damage.push(Rect::EVERYTHING);
                }
            }
            wl_surface::REQ_SET_BUFFER_SCALE_OPCODE => surface.scale = i64::from(first()),
            wl_surface::REQ_SET_BUFFER_TRANSFORM_OPCODE => surface.transform = i64::from(first()),
            wl_surface::REQ_COMMIT_OPCODE => return Self::commit(surface, exists),
            _ => {}
        }
        None
    }

    /// `wp_viewporter.get_viewport` for `surface`: its damage no longer
    /// scales to buffer coordinates.
    pub fn viewport(&mut self, surface: u32) {
        self.surfaces.entry(surface).or_default().viewport = true;
    }

    fn commit(surface: &mut Surface, exists: impl Fn(u32) -> bool) -> Option<Commit> {
        if let Some(attached) = surface.attached.take() {
            surface.current = attached;
        }
        let Some(buffer) = surface.current else {
            surface.damage.clear();
            surface.damage_buffer.clear();
            return None;
        };
        // Surface damage in buffer coordinates where that is a scaling;
        // anything else (a transform, a viewport) makes it the whole buffer.
        let mut damage = Stale::Rects(std::mem::take(&mut surface.damage_buffer));
        let plain = surface.transform == 0 && !surface.viewport && surface.scale > 0;
        let scale = surface.scale;
        let surface_damage = std::mem::take(&mut surface.damage);
        if plain {
            let scaled = surface_damage
                .iter()
                .map(|r| Rect {
                    x: r.x.saturating_mul(scale),
                    y: r.y.saturating_mul(scale),
                    w: r.w.saturating_mul(scale),
                    h: r.h.saturating_mul(scale),
                })
                .collect();
            damage.add(&Stale::Rects(scaled));
        } else if !surface_damage.is_empty() {
            damage = Stale::All;
        }
        surface.shown.retain(|b| exists(*b));
        let others = surface
            .shown
            .iter()
            .copied()
            .filter(|b| *b != buffer)
            .collect();
        if !surface.shown.contains(&buffer) && exists(buffer) {
            surface.shown.push(buffer);
        }
        Some(Commit {
            buffer,
            damage,
            others,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: i32, y: i32, w: i32, h: i32) -> Vec<Arg> {
        [x, y, w, h].into_iter().map(Arg::Int).collect()
    }

    const SURFACE: u32 = 3;

    fn req(s: &mut Surfaces, opcode: u16, args: &[Arg]) -> Option<Commit> {
        s.request(SURFACE, opcode, args, |b| b == 10 || b == 11)
    }

    #[test]
    fn surface_damage_scales_to_the_buffer_and_a_transform_makes_it_whole() {
        let mut s = Surfaces::default();
        req(
            &mut s,
            wl_surface::REQ_ATTACH_OPCODE,
            &[Arg::Object(10), Arg::Int(0), Arg::Int(0)],
        );
        req(
            &mut s,
            wl_surface::REQ_SET_BUFFER_SCALE_OPCODE,
            &[Arg::Int(2)],
        );
        req(&mut s, wl_surface::REQ_DAMAGE_OPCODE, &rect(1, 2, 3, 4));
        req(
            &mut s,
            wl_surface::REQ_DAMAGE_BUFFER_OPCODE,
            &rect(0, 0, 1, 1),
        );
        let c = req(&mut s, wl_surface::REQ_COMMIT_OPCODE, &[]).unwrap();
        assert_eq!(c.buffer, 10);
        let scaled = Rect {
            x: 2,
            y: 4,
            w: 6,
            h: 8,
        };
        let buffer = Rect {
            x: 0,
            y: 0,
            w: 1,
            h: 1,
        };
        assert_eq!(c.damage, Stale::Rects(vec![buffer, scaled]));
        req(
            &mut s,
            wl_surface::REQ_SET_BUFFER_TRANSFORM_OPCODE,
            &[Arg::Int(1)],
        );
        req(&mut s, wl_surface::REQ_DAMAGE_OPCODE, &rect(0, 0, 1, 1));
        let c = req(&mut s, wl_surface::REQ_COMMIT_OPCODE, &[]).unwrap();
        assert_eq!(c.damage, Stale::All, "a rotated surface: the whole buffer");
    }

    /// Double buffering: the damage of a frame shown from one buffer makes
    /// the other buffer stale there, so it is copied at its next use.
    #[test]
    fn a_commit_names_the_other_buffers_its_damage_makes_stale() {
        let mut s = Surfaces::default();
        for (buffer, others) in [(10, vec![]), (11, vec![10]), (10, vec![11])] {
            req(
                &mut s,
                wl_surface::REQ_ATTACH_OPCODE,
                &[Arg::Object(buffer), Arg::Int(0), Arg::Int(0)],
            );
            req(
                &mut s,
                wl_surface::REQ_DAMAGE_BUFFER_OPCODE,
                &rect(0, 0, 8, 8),
            );
            let c = req(&mut s, wl_surface::REQ_COMMIT_OPCODE, &[]).unwrap();
            assert_eq!((c.buffer, c.others), (buffer, others));
        }
        // A null attach shows nothing: nothing to copy.
        req(
            &mut s,
            wl_surface::REQ_ATTACH_OPCODE,
            &[Arg::Object(0), Arg::Int(0), Arg::Int(0)],
        );
        assert_eq!(req(&mut s, wl_surface::REQ_COMMIT_OPCODE, &[]), None);
    }

    #[test]
    fn a_flood_of_damage_becomes_the_whole_surface_and_stale_rects_are_bounded() {
        let mut s = Surfaces::default();
        req(
            &mut s,
            wl_surface::REQ_ATTACH_OPCODE,
            &[Arg::Object(10), Arg::Int(0), Arg::Int(0)],
        );
        for i in 0..300 {
            req(&mut s, wl_surface::REQ_DAMAGE_OPCODE, &rect(i, 0, 1, 1));
        }
        assert_eq!(s.surfaces[&SURFACE].damage.len(), MAX_DAMAGE + 1, "bounded");
        let c = req(&mut s, wl_surface::REQ_COMMIT_OPCODE, &[]).unwrap();
        assert_eq!(c.damage, Stale::All, "more rects than kept");
        let mut stale = Stale::Rects(vec![]);
        for i in 0..=MAX_RECTS as i64 {
            stale.add(&Stale::Rects(vec![Rect {
                x: i,
                y: 0,
                w: 1,
                h: 1,
            }]));
        }
        assert_eq!(stale, Stale::All);
    }
}
