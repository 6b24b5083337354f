fn main() -> std::process::ExitCode {
    qatc::cli::main()
}
