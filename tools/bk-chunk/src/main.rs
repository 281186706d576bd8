fn main() {
    bk_chunk::main_from(std::env::args_os())
}
