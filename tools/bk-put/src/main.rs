fn main() {
    bk_put::main_from(std::env::args_os())
}
