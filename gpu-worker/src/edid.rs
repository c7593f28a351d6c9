//! EDID 1.4 base blocks for GET_EDID, describing one scanout as a 60 Hz
//! panel of exactly the configured size, so a guest's preferred mode is the
//! size the user asked for with `--display`.

/// Length of an EDID base block.
pub const EDID_LEN: usize = 128;

const HEADER: [u8; 8] = [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
/// Horizontal and vertical blanking of CVT reduced blanking.
const H_BLANK: u32 = 160;
const H_SYNC_OFFSET: u32 = 48;
const H_SYNC_WIDTH: u32 = 32;
const V_BLANK: u32 = 35;
const V_SYNC_OFFSET: u32 = 3;
const V_SYNC_WIDTH: u32 = 6;
/// Largest active size a detailed timing descriptor can hold (12 bits).
const DTD_MAX_ACTIVE: u32 = 4095;
/// Largest pixel clock a detailed timing descriptor can hold, in 10 kHz.
const DTD_MAX_CLOCK: u64 = u16::MAX as u64;

/// Builds the EDID of a `width`×`height` display.
///
/// Sizes past what a detailed timing descriptor can carry (4095 pixels) get a
/// block without a detailed timing; the guest still learns the size from
/// GET_DISPLAY_INFO.
pub fn build(width: u32, height: u32, serial: u32) -> [u8; EDID_LEN] {
    let mut e = [0u8; EDID_LEN];
    e[0..8].copy_from_slice(&HEADER);
    // Manufacturer "GAL" in EDID's packed 5-bit letters.
    let id = pack_letter(b'G') << 10 | pack_letter(b'A') << 5 | pack_letter(b'L');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&1u16.to_le_bytes()); // product code
    e[12..16].copy_from_slice(&serial.to_le_bytes());
    e[16] = 1; // week of manufacture
    e[17] = 36; // year of manufacture: 2026, counted from 1990
    e[18] = 1; // EDID version 1
    e[19] = 4; // revision 4
    e[20] = 0xa0; // digital input, 8 bits per colour
    let (width_mm, height_mm) = (px_to_mm(width), px_to_mm(height));
    e[21] = (width_mm / 10).min(255) as u8;
    e[22] = (height_mm / 10).min(255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // sRGB default colour space; preferred timing is native
                  // sRGB chromaticity.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // No established timings (35..38); standard timings unused.
    for slot in e[38..54].chunks_mut(2) {
        slot.copy_from_slice(&[0x01, 0x01]);
    }
    match detailed_timing(width, height, width_mm, height_mm) {
        Some(dtd) => e[54..72].copy_from_slice(&dtd),
        None => e[54..72].copy_from_slice(&dummy_descriptor()),
    }
    e[72..90].copy_from_slice(&name_descriptor(b"gpu-airlock"));
    e[90..108].copy_from_slice(&dummy_descriptor());
    e[108..126].copy_from_slice(&dummy_descriptor());
    e[126] = 0; // no extension blocks
    let sum = e[..127].iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

fn pack_letter(c: u8) -> u16 {
    u16::from(c - b'A' + 1)
}

/// Physical size at 96 dots per inch, in millimetres (12-bit field).
fn px_to_mm(px: u32) -> u32 {
    (u64::from(px) * 254 / 960).min(4095) as u32
}

fn detailed_timing(width: u32, height: u32, width_mm: u32, height_mm: u32) -> Option<[u8; 18]> {
    if width > DTD_MAX_ACTIVE || height > DTD_MAX_ACTIVE {
        return None;
    }
    let h_total = u64::from(width + H_BLANK);
    let v_total = u64::from(height + V_BLANK);
    // 60 Hz where the clock field allows it, slower for very large panels.
    let refresh = (DTD_MAX_CLOCK * 10_000 / (h_total * v_total)).clamp(1, 60);
    let clock = (h_total * v_total * refresh).div_ceil(10_000);
    let clock = u16::try_from(clock).ok()?;

    let mut d = [0u8; 18];
    d[0..2].copy_from_slice(&clock.to_le_bytes());
    d[2] = width as u8;
    d[3] = H_BLANK as u8;
    d[4] = ((width >> 8) as u8) << 4 | (H_BLANK >> 8) as u8;
    d[5] = height as u8;
    d[6] = V_BLANK as u8;
    d[7] = ((height >> 8) as u8) << 4 | (V_BLANK >> 8) as u8;
    d[8] = H_SYNC_OFFSET as u8;
    d[9] = H_SYNC_WIDTH as u8;
    d[10] = (V_SYNC_OFFSET as u8) << 4 | V_SYNC_WIDTH as u8;
    d[11] = 0; // high bits of the sync fields, all small
    d[12] = width_mm as u8;
    d[13] = height_mm as u8;
    d[14] = ((width_mm >> 8) as u8) << 4 | (height_mm >> 8) as u8;
    d[15] = 0;
    d[16] = 0;
    d[17] = 0x1a; // digital separate sync, hsync +, vsync -
    Some(d)
}

fn name_descriptor(name: &[u8]) -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = 0xfc; // display product name
    let text = &mut d[5..18];
    text.fill(b' ');
    let n = name.len().min(12);
    text[..n].copy_from_slice(&name[..n]);
    text[n] = b'\n';
    d
}

fn dummy_descriptor() -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = 0x10;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active_size(e: &[u8; EDID_LEN]) -> (u32, u32) {
        let d = &e[54..72];
        let w = u32::from(d[2]) | u32::from(d[4] >> 4) << 8;
        let h = u32::from(d[5]) | u32::from(d[7] >> 4) << 8;
        (w, h)
    }

    #[test]
    fn block_is_well_formed() {
        let e = build(1280, 800, 0);
        assert_eq!(e[0..8], HEADER);
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!((e[18], e[19]), (1, 4));
        assert_eq!(&e[72..78], &[0, 0, 0, 0xfc, 0, b'g']);
    }

    #[test]
    fn preferred_timing_is_the_configured_size() {
        for (w, h) in [(1280, 800), (1920, 1080), (3840, 2160), (640, 480), (1, 1)] {
            let e = build(w, h, 1);
            assert_eq!(active_size(&e), (w, h));
            let clock = u32::from(u16::from_le_bytes([e[54], e[55]]));
            assert!(clock > 0, "{w}x{h}");
            assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        }
    }

    #[test]
    fn refresh_drops_rather_than_overflowing_the_clock() {
        let e = build(4095, 4095, 0);
        assert_eq!(active_size(&e), (4095, 4095));
    }

    #[test]
    fn oversized_panels_get_no_detailed_timing() {
        let e = build(8192, 4320, 0);
        assert_eq!(e[54..58], [0, 0, 0, 0x10]);
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }
}
