//! The last line of defence of a server over memory-mapped index files. The model thread checks
//! the files before every batch that reads them and never reads a changed one; a file
//! truncated in place in the instant between that check and the read still raises `SIGBUS`.
//! Then the process cannot go on (the mapping is gone), but it must not die without a word: the
//! handler installed here says what happened and how to avoid it, and exits with status 135
//! (128 + SIGBUS, what a shell reports for a death by the signal).

/// What the handler writes to stderr (a fixed string: a signal handler may only write).
const MESSAGE: &[u8] = b"gear serve: SIGBUS: an index file was truncated or rewritten in place \
while the server was reading it; the server cannot go on. Replace an index under a running \
server by renaming a complete new folder (or file) into place, never by copying over it \
(docs/serve.md).\n";

#[cfg(unix)]
extern "C" fn on_sigbus(_: libc::c_int) {
    // SAFETY: `write` and `_exit` are async-signal-safe; MESSAGE is a static buffer.
    #[allow(unsafe_code)]
    unsafe {
        let _ = libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(135);
    }
}

/// Installs the `SIGBUS` handler (once per process; later calls change nothing).
pub(crate) fn report_index_faults() {
    #[cfg(unix)]
    {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            // SAFETY: a zeroed `sigaction` is a valid empty one; the handler only calls
            // async-signal-safe functions; nothing else in the process handles SIGBUS.
            #[allow(unsafe_code)]
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
                    tracing::warn!("could not install the SIGBUS handler");
                }
            }
        });
    }
}
