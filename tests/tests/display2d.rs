//! The 2D command set through the real backend: a resource created, backed
//! by scattered guest pages, filled by a transfer, shown on a scanout and
//! flushed, then released; and each command's refusals.

use harness::*;
use vm_memory::{Bytes, GuestAddress};

fn answer(dev: &mut Device, request: &[u8]) -> u32 {
    dev.answer(request)
}

const B8G8R8A8: u32 = 1;
/// Guest pages backing the resource, deliberately not contiguous.
const PAGE_A: u64 = 0x40_0000;
const PAGE_B: u64 = 0x60_0000;

#[test]
fn a_frame_goes_from_guest_pages_to_a_scanout() {
    let backend = Backend::start(&["--display", "64x32"]);
    let mut dev = Device::connect(&backend.socket);

    // 64x32 pixels = 8192 bytes, backed by two 4096-byte runs.
    assert_eq!(
        answer(
            &mut dev,
            &cmd(CMD_RESOURCE_CREATE_2D, &[1, B8G8R8A8, 64, 32])
        ),
        RESP_OK_NODATA
    );
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    dev.mem
        .write_slice(&pattern[..4096], GuestAddress(PAGE_A))
        .unwrap();
    dev.mem
        .write_slice(&pattern[4096..], GuestAddress(PAGE_B))
        .unwrap();
    let mut attach = cmd(CMD_RESOURCE_ATTACH_BACKING, &[1, 2]);
    for (addr, len) in [(PAGE_A, 4096u32), (PAGE_B, 4096)] {
        attach.extend_from_slice(&addr.to_le_bytes());
        attach.extend_from_slice(&len.to_le_bytes());
        attach.extend_from_slice(&0u32.to_le_bytes());
    }
    assert_eq!(answer(&mut dev, &attach), RESP_OK_NODATA);
    // Transfer the whole frame: rect, offset 0 (u64), resource, padding.
    let transfer = cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 64, 32, 0, 0, 1, 0]);
    assert_eq!(answer(&mut dev, &transfer), RESP_OK_NODATA);
    // Show it on scanout 0: rect, scanout, resource.
    assert_eq!(
        answer(&mut dev, &cmd(CMD_SET_SCANOUT, &[0, 0, 64, 32, 0, 1])),
        RESP_OK_NODATA
    );
    assert_eq!(
        answer(&mut dev, &cmd(CMD_RESOURCE_FLUSH, &[0, 0, 64, 32, 1, 0])),
        RESP_OK_NODATA
    );
    // Disable the scanout, release the resource; it is gone after.
    assert_eq!(
        answer(&mut dev, &cmd(CMD_SET_SCANOUT, &[0, 0, 0, 0, 0, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        answer(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[1, 0])),
        RESP_OK_NODATA
    );
    assert_eq!(
        answer(&mut dev, &cmd(CMD_RESOURCE_FLUSH, &[0, 0, 64, 32, 1, 0])),
        RESP_ERR_INVALID_RESOURCE_ID
    );
}

#[test]
fn each_2d_command_refuses_bad_input_with_the_spec_code() {
    let backend = Backend::start(&["--display", "64x32", "--max-resource-memory", "1"]);
    let mut dev = Device::connect(&backend.socket);
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "resource id 0",
            cmd(CMD_RESOURCE_CREATE_2D, &[0, B8G8R8A8, 4, 4]),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "unknown format",
            cmd(CMD_RESOURCE_CREATE_2D, &[2, 999, 4, 4]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "zero width",
            cmd(CMD_RESOURCE_CREATE_2D, &[2, B8G8R8A8, 0, 4]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "past --max-resource-memory (1 MiB)",
            cmd(CMD_RESOURCE_CREATE_2D, &[2, B8G8R8A8, 1024, 1024]),
            RESP_ERR_OUT_OF_MEMORY,
        ),
        (
            "width x height x 4 overflows",
            cmd(CMD_RESOURCE_CREATE_2D, &[2, B8G8R8A8, u32::MAX, u32::MAX]),
            RESP_ERR_OUT_OF_MEMORY,
        ),
        (
            "create",
            cmd(CMD_RESOURCE_CREATE_2D, &[3, B8G8R8A8, 16, 16]),
            RESP_OK_NODATA,
        ),
        (
            "id in use",
            cmd(CMD_RESOURCE_CREATE_2D, &[3, B8G8R8A8, 4, 4]),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "unref unknown",
            cmd(CMD_RESOURCE_UNREF, &[9, 0]),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "backing outside guest memory",
            {
                let mut a = cmd(CMD_RESOURCE_ATTACH_BACKING, &[3, 1]);
                a.extend_from_slice(&(GUEST_MEM_SIZE as u64 - 16).to_le_bytes());
                a.extend_from_slice(&4096u32.to_le_bytes());
                a.extend_from_slice(&0u32.to_le_bytes());
                a
            },
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "more entries announced than sent",
            cmd(CMD_RESOURCE_ATTACH_BACKING, &[3, 1000]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "transfer without backing",
            cmd(CMD_TRANSFER_TO_HOST_2D, &[0, 0, 16, 16, 0, 0, 3, 0]),
            RESP_ERR_UNSPEC,
        ),
        (
            "scanout past the device",
            cmd(CMD_SET_SCANOUT, &[0, 0, 16, 16, 1, 3]),
            RESP_ERR_INVALID_SCANOUT_ID,
        ),
        (
            "scanout of unknown resource",
            cmd(CMD_SET_SCANOUT, &[0, 0, 16, 16, 0, 8]),
            RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            "scanout rect outside",
            cmd(CMD_SET_SCANOUT, &[8, 8, 16, 16, 0, 3]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "flush rect outside",
            cmd(CMD_RESOURCE_FLUSH, &[0, 0, 17, 1, 3, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "flush rect wraps",
            cmd(CMD_RESOURCE_FLUSH, &[u32::MAX, 0, 2, 1, 3, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
        (
            "body too short",
            cmd(CMD_SET_SCANOUT, &[0, 0]),
            RESP_ERR_INVALID_PARAMETER,
        ),
    ];
    for (what, request, want) in cases {
        assert_eq!(answer(&mut dev, &request), want, "{what}");
    }
    // Refusals are logged, and the device still works.
    assert!(backend
        .log
        .wait_for(
            &["refused", "--max-resource-memory"],
            std::time::Duration::from_secs(5)
        )
        .is_some());
    assert_eq!(
        answer(&mut dev, &cmd(CMD_RESOURCE_UNREF, &[3, 0])),
        RESP_OK_NODATA
    );
}
