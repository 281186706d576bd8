fn main() {
    bk_get::main_from(std::env::args_os())
}
