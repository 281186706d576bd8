fn main() {
    bk_prune::main_from(std::env::args_os())
}
