//! The shared library's soname: liblors.so.<major> (a program linked with
//! -llors records it; scripts/install-liblors installs the links).

fn main() {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liblors.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
