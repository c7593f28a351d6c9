//! The globals the proxy lets clients bind: the interfaces whose every
//! message it can relay, because it knows each one's signature (from the
//! protocol XML, through the interface descriptions wayland-client and
//! wayland-protocols generate) and every descriptor any of them carries is
//! one it translates (shared memory, compositor memfds, pipes). A global
//! of any other interface is not announced to clients: a linux-dmabuf or a
//! drm-lease descriptor, say, has no way across a cross-domain channel.
//! Objects a global creates (a wl_surface from wl_compositor, a
//! wl_data_offer from wl_data_device) come from the same descriptions.

use wayland_backend::protocol::Interface;
use wayland_client::protocol::{
    wl_compositor::WlCompositor, wl_data_device_manager::WlDataDeviceManager,
    wl_display::WlDisplay, wl_output::WlOutput, wl_seat::WlSeat, wl_shm::WlShm,
    wl_subcompositor::WlSubcompositor,
};
use wayland_client::Proxy;
use wayland_protocols::wp::presentation_time::client::wp_presentation::WpPresentation;
use wayland_protocols::wp::primary_selection::zv1::client::zwp_primary_selection_device_manager_v1::ZwpPrimarySelectionDeviceManagerV1;
use wayland_protocols::wp::viewporter::client::wp_viewporter::WpViewporter;
use wayland_protocols::xdg::decoration::zv1::client::zxdg_decoration_manager_v1::ZxdgDecorationManagerV1;
use wayland_protocols::wp::cursor_shape::v1::client::wp_cursor_shape_manager_v1::WpCursorShapeManagerV1;
use wayland_protocols::wp::fractional_scale::v1::client::wp_fractional_scale_manager_v1::WpFractionalScaleManagerV1;
use wayland_protocols::wp::idle_inhibit::zv1::client::zwp_idle_inhibit_manager_v1::ZwpIdleInhibitManagerV1;
use wayland_protocols::wp::pointer_constraints::zv1::client::zwp_pointer_constraints_v1::ZwpPointerConstraintsV1;
use wayland_protocols::wp::relative_pointer::zv1::client::zwp_relative_pointer_manager_v1::ZwpRelativePointerManagerV1;
use wayland_protocols::wp::tablet::zv2::client::zwp_tablet_manager_v2::ZwpTabletManagerV2;
use wayland_protocols::wp::text_input::zv3::client::zwp_text_input_manager_v3::ZwpTextInputManagerV3;
use wayland_protocols::xdg::activation::v1::client::xdg_activation_v1::XdgActivationV1;
use wayland_protocols::wp::keyboard_shortcuts_inhibit::zv1::client::zwp_keyboard_shortcuts_inhibit_manager_v1::ZwpKeyboardShortcutsInhibitManagerV1;
use wayland_protocols::wp::pointer_gestures::zv1::client::zwp_pointer_gestures_v1::ZwpPointerGesturesV1;
use wayland_protocols::xdg::foreign::zv1::client::{
    zxdg_exporter_v1::ZxdgExporterV1, zxdg_importer_v1::ZxdgImporterV1,
};
use wayland_protocols::xdg::foreign::zv2::client::{
    zxdg_exporter_v2::ZxdgExporterV2, zxdg_importer_v2::ZxdgImporterV2,
};
use wayland_protocols::xdg::shell::client::xdg_wm_base::XdgWmBase;
use wayland_protocols_plasma::server_decoration::client::org_kde_kwin_server_decoration_manager::OrgKdeKwinServerDecorationManager;
use wayland_protocols::xdg::xdg_output::zv1::client::zxdg_output_manager_v1::ZxdgOutputManagerV1;

/// wl_display: object 1 of every connection.
pub fn display() -> &'static Interface {
    WlDisplay::interface()
}

/// The interfaces of the globals clients may bind: the core and the shell,
/// and what real desktop applications (GTK, Qt, terminals, games) look for
/// beside them: input (relative pointer, pointer constraints, text input
/// v3, tablets, cursor shapes), activation and window parenting
/// (xdg-activation, xdg-foreign v1 as GTK 3 uses it and v2), fractional
/// scaling, idle inhibition, touchpad gestures and keyboard-shortcut
/// inhibition (GTK binds both, sway offers both), and KDE's server
/// decoration, by which GTK 3 and 4 tell sway and KDE they draw their own
/// (without it, sway draws a title bar above GTK's header bar). The set
/// covers every global that GTK 3 and 4, Qt 6, foot, Xwayland and wev
/// bound on sway (WAYLAND_DEBUG; the applications of the desktop tests).
/// None of these carries a descriptor (the test below walks them).
pub fn relayed() -> [&'static Interface; 27] {
    [
        WlCompositor::interface(),
        WlSubcompositor::interface(),
        WlShm::interface(),
        WlSeat::interface(),
        WlOutput::interface(),
        WlDataDeviceManager::interface(),
        XdgWmBase::interface(),
        ZxdgDecorationManagerV1::interface(),
        ZxdgOutputManagerV1::interface(),
        WpViewporter::interface(),
        WpPresentation::interface(),
        ZwpPrimarySelectionDeviceManagerV1::interface(),
        ZwpRelativePointerManagerV1::interface(),
        ZwpPointerConstraintsV1::interface(),
        ZwpTextInputManagerV3::interface(),
        ZwpTabletManagerV2::interface(),
        WpCursorShapeManagerV1::interface(),
        XdgActivationV1::interface(),
        ZxdgExporterV1::interface(),
        ZxdgImporterV1::interface(),
        ZxdgExporterV2::interface(),
        ZxdgImporterV2::interface(),
        ZwpPointerGesturesV1::interface(),
        ZwpKeyboardShortcutsInhibitManagerV1::interface(),
        OrgKdeKwinServerDecorationManager::interface(),
        WpFractionalScaleManagerV1::interface(),
        ZwpIdleInhibitManagerV1::interface(),
    ]
}

/// The relayed global named `name`.
pub fn find(name: &[u8]) -> Option<&'static Interface> {
    relayed().into_iter().find(|i| i.name.as_bytes() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wayland_backend::protocol::ArgumentType;

    /// Every descriptor any relayed interface carries, reached through the
    /// objects its messages create: the proxy translates exactly these.
    #[test]
    fn every_descriptor_a_relayed_interface_carries_is_one_the_proxy_translates() {
        let mut seen = vec![display()];
        let mut todo: Vec<&Interface> = relayed().to_vec();
        todo.push(display());
        let mut fds = Vec::new();
        while let Some(i) = todo.pop() {
            for (dir, list) in [("request", i.requests), ("event", i.events)] {
                for m in list {
                    if m.signature.contains(&ArgumentType::Fd) {
                        fds.push(format!("{} {}.{}", dir, i.name, m.name));
                    }
                    if let Some(c) = m.child_interface {
                        if !seen.iter().any(|s| s.name == c.name) {
                            seen.push(c);
                            todo.push(c);
                        }
                    }
                }
            }
        }
        fds.sort();
        assert_eq!(
            fds,
            [
                "event wl_data_source.send",
                "event wl_keyboard.keymap",
                "event zwp_primary_selection_source_v1.send",
                "request wl_data_offer.receive",
                "request wl_shm.create_pool",
                "request zwp_primary_selection_offer_v1.receive",
            ]
        );
    }

    /// The proxy names messages by wayland-scanner's generated opcodes;
    /// they index the same descriptions it walks messages by.
    #[test]
    fn generated_opcodes_index_the_interface_descriptions() {
        use wayland_client::protocol::{wl_display, wl_shm, wl_shm_pool};
        let name = |i: &Interface, events: bool, op: u16| {
            let list = if events { i.events } else { i.requests };
            list[usize::from(op)].name
        };
        assert_eq!(
            name(display(), true, wl_display::EVT_DELETE_ID_OPCODE),
            "delete_id"
        );
        assert_eq!(name(display(), true, wl_display::EVT_ERROR_OPCODE), "error");
        assert_eq!(
            name(WlShm::interface(), false, wl_shm::REQ_CREATE_POOL_OPCODE),
            "create_pool"
        );
        let pool = WlShm::interface().requests[usize::from(wl_shm::REQ_CREATE_POOL_OPCODE)]
            .child_interface
            .unwrap();
        assert_eq!(
            name(pool, false, wl_shm_pool::REQ_CREATE_BUFFER_OPCODE),
            "create_buffer"
        );
        assert!(find(b"wl_shm").is_some());
        assert!(find(b"zwp_linux_dmabuf_v1").is_none());
    }
}
