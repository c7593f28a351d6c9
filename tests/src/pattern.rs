//! The picture the guest tests' Wayland client draws, and finding it in a
//! screenshot: every pixel a function of its position, so that a match
//! at one place is a match of the whole window, pixel for pixel.

/// The colour at (x, y), as red, green, blue.
pub fn rgb(x: u32, y: u32) -> [u8; 3] {
    [
        (x.wrapping_mul(3).wrapping_add(17) & 0xff) as u8,
        (y.wrapping_mul(5).wrapping_add(29) & 0xff) as u8,
        ((x ^ y) & 0xff) as u8,
    ]
}

/// A `width`×`height` XRGB8888 image of the pattern (little-endian bytes:
/// blue, green, red, unused), rows of `width * 4` bytes.
pub fn pixels(width: u32, height: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            let [r, g, b] = rgb(x, y);
            v.extend_from_slice(&[b, g, r, 0xff]);
        }
    }
    v
}

/// Where in `screen` (RGB rows of `screen_width` pixels) the pattern's
/// `width`×`height` window lies whole, if it does anywhere.
pub fn find(screen: &[u8], screen_width: usize, width: u32, height: u32) -> Option<(usize, usize)> {
    let screen_height = screen.len() / 3 / screen_width;
    let at = |x: usize, y: usize| &screen[(y * screen_width + x) * 3..][..3];
    let (w, h) = (width as usize, height as usize);
    for y0 in 0..screen_height.saturating_sub(h - 1) {
        for x0 in 0..screen_width.saturating_sub(w - 1) {
            if at(x0, y0) != rgb(0, 0) {
                continue;
            }
            let whole =
                (0..h).all(|y| (0..w).all(|x| at(x0 + x, y0 + y) == rgb(x as u32, y as u32)));
            if whole {
                return Some((x0, y0));
            }
        }
    }
    None
}

/// A PNG file (a compositor's or QEMU's screenshot) as width, height and
/// RGB rows.
pub fn read_png(path: &std::path::Path) -> (usize, usize, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width as usize, info.height as usize, rgb)
}
