fn main() {
    std::process::exit(re6mesh::cli::main());
}
