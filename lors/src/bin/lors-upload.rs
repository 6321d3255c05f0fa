//! `lors-upload ARGS...` is `lors upload ARGS...` (the LoRS tool name).
//! It runs the `lors` binary installed beside it.

fn main() -> std::process::ExitCode {
    lors::alias::exec_sibling("upload")
}
