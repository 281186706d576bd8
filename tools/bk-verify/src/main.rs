fn main() {
    bk_verify::main_from(std::env::args_os())
}
