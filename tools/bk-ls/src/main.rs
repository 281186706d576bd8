fn main() {
    bk_ls::main_from(std::env::args_os())
}
