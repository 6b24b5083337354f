fn main() -> std::process::ExitCode {
    // Like other Unix filters, stop quietly when the reader of stdout goes away
    // (`qatc explain ops | head -1`) instead of panicking inside println!.
    #[cfg(unix)]
    // SAFETY: called first, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    qatc::cli::main()
}
