//! `lors-download ARGS...` is `lors download ARGS...` (the LoRS tool
//! name). It runs the `lors` binary installed beside it.

fn main() -> std::process::ExitCode {
    lors::alias::exec_sibling("download")
}
