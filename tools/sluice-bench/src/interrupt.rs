//! Ctrl-C (SIGINT) ends a run early but still reports it: producers stop
//! sending, outstanding messages are acknowledged, consumers drain, and the
//! results so far are printed and written (marked as interrupted, exit 1).
//! A second Ctrl-C kills the process as usual.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub fn install() {
    // SAFETY: the handler only stores to an atomic; SA_RESETHAND restores the
    // default action, so a second SIGINT terminates the process.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}
