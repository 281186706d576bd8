fn main() {
    bk_repo::main_from(std::env::args_os())
}
