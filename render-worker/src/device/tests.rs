//! render-worker's checks of its own, without rutabaga.

use super::*;
use wire::cross_domain::{CMD_GET_IMAGE_REQUIREMENTS, CMD_INIT};

fn cmd(size: u16, total: usize) -> Vec<u8> {
    let mut v = vec![0u8; total];
    v[2..4].copy_from_slice(&size.to_le_bytes());
    v
}

#[test]
fn cross_domain_framing_is_checked_before_rutabaga_walks_it() {
    check_cross_domain_framing(&cmd(16, 16)).unwrap();
    check_cross_domain_framing(&[]).unwrap();
    let mut two = cmd(16, 16);
    two.extend(cmd(8, 8));
    assert_eq!(check_cross_domain_framing(&two).unwrap(), Walk::default());
    // An INIT (command 1, 36 bytes) opens a channel when its channel
    // type, 16 bytes in, is not 0.
    let mut init = cmd(36, 36);
    init[0] = CMD_INIT;
    assert!(!check_cross_domain_framing(&init).unwrap().opens_channel);
    init[16] = 1;
    assert!(check_cross_domain_framing(&init).unwrap().opens_channel);
    // One cut short of its 36 bytes opens nothing (rutabaga refuses it).
    let mut short = init[..20].to_vec();
    short[2] = 20;
    assert!(!check_cross_domain_framing(&short).unwrap().opens_channel);
    // Image requirements are counted.
    let mut reqs = cmd(24, 24);
    reqs[0] = CMD_GET_IMAGE_REQUIREMENTS;
    let mut three = reqs.clone();
    three.extend(&reqs);
    three.extend(&init);
    three.extend(&reqs);
    let walk = check_cross_domain_framing(&three).unwrap();
    assert_eq!((walk.requirements, walk.opens_channel), (3, true));
    assert!(
        check_cross_domain_framing(&cmd(0, 16)).is_err(),
        "size 0 would spin"
    );
    assert!(check_cross_domain_framing(&cmd(4, 16)).is_err());
    assert!(check_cross_domain_framing(&cmd(32, 16)).is_err());
    assert!(check_cross_domain_framing(&[1, 0, 16]).is_err());
}

/// A memfd laid out as lavapipe's opaque memory: its length and the
/// memory's offset first, the memory a page further on.
fn lavapipe_memory(size: u64, header: Option<(u64, u64)>) -> OwnedFd {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use std::os::unix::fs::FileExt;
    let fd = memfd_create(c"llvmpipe memory fd", MFdFlags::MFD_ALLOW_SEALING).unwrap();
    let file = std::fs::File::from(fd);
    let len = size + 4096 + 40;
    file.set_len(len).unwrap();
    let (l, o) = header.unwrap_or((len, 4096));
    file.write_all_at(&l.to_ne_bytes(), 0).unwrap();
    file.write_all_at(&o.to_ne_bytes(), 8).unwrap();
    file.into()
}

#[test]
fn lavapipe_opaque_memory_is_found_after_its_header_and_nothing_else_is_taken() {
    use super::mapping::opaque_memory_offset;
    let size = 3 * 4096;
    let len = size + 4096 + 40;
    let fd = lavapipe_memory(size, None);
    assert_eq!(opaque_memory_offset(&fd, len, size), Ok(4096));
    // The blob asks for more than follows the header.
    assert!(opaque_memory_offset(&fd, len, size + 4096).is_err());
    // Headers that do not describe the descriptor: another length, an
    // offset inside the header or off a page boundary, one past the end.
    for header in [(len + 1, 4096), (len, 8), (len, 4100), (len, !4095)] {
        let fd = lavapipe_memory(size, Some(header));
        assert!(
            opaque_memory_offset(&fd, len, size).is_err(),
            "header {header:?} taken"
        );
    }
}
