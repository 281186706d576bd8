fn main() {
    bk_sqlite::main_from(std::env::args_os())
}
