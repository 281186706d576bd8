fn main() {
    bk_wal::main_from(std::env::args_os())
}
