fn main() {
    std::process::exit(de_build::run(std::env::args_os()));
}
